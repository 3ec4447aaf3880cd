"""Kafka plumbing shared by the stages: topics, client factories, lag, publishing.

Every client is built from :meth:`KafkaSettings.client_kwargs` so security options
(SASL/SSL) reach each of them. Consumers never auto-commit: stages commit after their
output is acknowledged (at-least-once). Producers use ``acks='all'`` and are idempotent,
except on the embedded broker (:mod:`newswatch.io.broker_compat`).

Lag is computed from the high-water mark carried by fetch responses
(:meth:`AIOKafkaConsumer.highwater`), not from ListOffsets: that is correct on Kafka and
on the embedded Tansu broker, whose ListOffsets(latest) under-reports end offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from newswatch.errors import NewswatchError
from newswatch.io.broker_compat import producer_options
from newswatch.io.schemas import MAX_RECORD_BYTES
from newswatch.settings import KafkaSettings

__all__ = [
    "KafkaIOError",
    "close_client",
    "create_topics",
    "make_consumer",
    "make_producer",
    "partition_lag",
    "publish",
    "unreachable_error",
]

log = logging.getLogger(__name__)


class KafkaIOError(NewswatchError):
    """The Kafka cluster could not be reached or refused an operation."""

    retriable = True


async def close_client(client: AIOKafkaConsumer | AIOKafkaProducer, name: str) -> None:
    """``client.stop()`` that neither raises nor hides a cancellation of the calling task.

    On an unreachable broker a consumer's stop can raise the ``CancelledError`` of one of its
    own fetch tasks (aiokafka cancels and awaits them; aio-libs/aiokafka#983), and any stop can
    fail on a dead connection. Either would skip the remaining clean-up and mask the error the
    stage is stopping for, so it is logged instead. A cancellation of *this* task still propagates.
    """
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("%s: stop interrupted by a cancelled internal task (broker unreachable?)", name)
    except Exception as exc:
        log.warning("%s: stop failed: %s: %s", name, type(exc).__name__, exc)


def unreachable_error(kafka: KafkaSettings, exc: BaseException) -> KafkaIOError:
    """The one-line error for a cluster that cannot be reached, with how to fix it."""
    return KafkaIOError(
        f"cannot reach Kafka at {kafka.bootstrap_servers} ({type(exc).__name__}: {exc}); "
        "start one with `newswatch broker` or set NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS"
    )


async def create_topics(
    kafka: KafkaSettings,
    topics: Iterable[str],
    partitions: int | None = None,
    compacted: Iterable[str] = (),
) -> list[str]:
    """Create ``topics`` with one partition count (``kafka.partitions`` unless given).

    Names in ``compacted`` (a subset of ``topics``) are log-compacted, single-partition
    topics (``cleanup.policy=compact``), e.g. the notifier's delivery log. Topics that
    exist already are left alone. Returns the names that were created. Raises
    :class:`KafkaIOError` when the cluster cannot be reached.
    """
    compact = set(compacted)
    names = list(dict.fromkeys(topics))
    count = partitions or kafka.partitions
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(), client_id=f"{kafka.client_id}-admin")
    try:
        await admin.start()
    except (KafkaConnectionError, KafkaError, OSError) as exc:
        await admin.close()
        raise unreachable_error(kafka, exc) from exc
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        for name in missing:  # one request per topic: a concurrent creator makes only that one fail
            try:
                if name in compact:
                    topic = NewTopic(
                        name, 1, kafka.replication_factor, topic_configs={"cleanup.policy": "compact"}
                    )
                else:
                    topic = NewTopic(name, count, kafka.replication_factor)
                await admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
    except KafkaError as exc:
        raise KafkaIOError(f"creating topics {missing} failed: {exc}") from exc
    finally:
        await admin.close()
    return created


def make_producer(kafka: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """A producer: ``acks='all'``, small linger, 256 KiB batches, idempotent unless the broker cannot be.

    Idempotence is off only with ``kafka.broker_compat='tansu'``
    (:func:`~newswatch.io.broker_compat.producer_options`).
    """
    kwargs: dict[str, Any] = {
        **kafka.client_kwargs(),
        "client_id": f"{kafka.client_id}-producer",
        "acks": "all",
        **producer_options(kafka),
        "linger_ms": 5,
        "max_request_size": MAX_RECORD_BYTES,
        # Batches of 256 KiB (aiokafka's default is 16 KiB): half the per-record cost of a stage's
        # output (bench/hotpath.py), still well under Kafka's 1 MB message.max.bytes.
        "max_batch_size": 262_144,
    }
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


def make_consumer(
    kafka: KafkaSettings, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer that never auto-commits and starts from the earliest offset of a new group.

    Session and heartbeat come from ``kafka``; the rebalance timeout equals the session
    timeout, so a group forms quickly on brokers that wait for it (Tansu answers a join
    after half of it).
    """
    kwargs: dict[str, Any] = {
        **kafka.client_kwargs(),
        "client_id": f"{kafka.client_id}-consumer",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "rebalance_timeout_ms": kafka.session_timeout_ms,
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


async def partition_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Messages between the consumer position and the fetch high-water mark, per assigned partition.

    Partitions that have not been fetched yet (no high-water mark known) are left out.
    """
    lag: dict[TopicPartition, int] = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue
        try:
            position = await asyncio.wait_for(consumer.position(tp), timeout=1.0)
        except (KafkaError, TimeoutError, AssertionError):
            continue
        lag[tp] = max(0, high - position)
    return lag


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes, int | None]],
) -> int:
    """Send ``(key, value, timestamp_ms)`` records and wait until all are acknowledged.

    Returns how many were sent; raises the first delivery error.
    """
    futures = [
        await producer.send(topic, value=value, key=key, timestamp_ms=ts) for key, value, ts in records
    ]
    if futures:
        await asyncio.gather(*futures)
    return len(futures)
