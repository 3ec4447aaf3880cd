"""Where the embedded broker's limits are handled, and nowhere else.

Every work-around for a broker that is not quite Kafka sits here, switched by
``kafka.broker_compat`` (``'tansu'`` for the embedded broker, ``'kafka'`` for a real
cluster), so a production deployment runs plain aiokafka defaults:

* Tansu 0.6 answers ``InitProducerId`` with an unknown error, so producers are idempotent
  on Kafka and only lose idempotence with ``broker_compat='tansu'``
  (:func:`producer_options`).
* A consumer that is not subscribed to a topic has no metadata for it;
  :func:`refresh_metadata` asks the cluster (aiokafka offers no public call for that, so
  the one use of its private client is here).

faust's changelog recovery on Tansu (true end offsets) needs a faust transport and lives
beside the aggregator (``newswatch.stream.aggregate.faust_compat``), switched by the same
setting.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer

from newswatch.settings import KafkaSettings

__all__ = ["is_tansu", "producer_options", "refresh_metadata"]


def is_tansu(kafka: KafkaSettings) -> bool:
    """True when ``kafka`` points at the embedded Tansu broker (``broker_compat='tansu'``)."""
    return kafka.broker_compat == "tansu"


def producer_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Producer keyword arguments the broker needs: idempotence off on Tansu, on elsewhere.

    >>> producer_options(KafkaSettings(broker_compat="tansu"))
    {'enable_idempotence': False}
    >>> producer_options(KafkaSettings())
    {'enable_idempotence': True}
    """
    return {"enable_idempotence": not is_tansu(kafka)}


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Fetch cluster metadata now, so ``partitions_for_topic`` knows unsubscribed topics."""
    await consumer._client.force_metadata_update()
