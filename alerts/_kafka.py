"""Small Kafka helpers of the alerts stages (topic creation, reading a log topic to its end)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from newswatch.errors import NewswatchError

log = logging.getLogger(__name__)


class KafkaUnavailableError(NewswatchError):
    """The brokers could not be reached or did not answer in time."""

    retriable = True


async def ensure_topics(
    client_kwargs: dict[str, Any],
    topics: list[str],
    partitions: int,
    replication: int,
    compacted: tuple[str, ...] = (),
) -> None:
    """Create ``topics`` that do not exist yet (``compacted`` ones with ``cleanup.policy=compact``)."""
    admin = AIOKafkaAdminClient(**client_kwargs)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        for name in topics:
            if name in existing:
                continue
            configs = {"cleanup.policy": "compact"} if name in compacted else {}
            parts = 1 if name in compacted else partitions
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(name, parts, replication, topic_configs=configs)])
    except KafkaError as exc:
        raise KafkaUnavailableError(
            f"cannot create topics on {client_kwargs.get('bootstrap_servers')}: {exc}"
        ) from exc
    finally:
        await admin.close()


async def read_to_end(
    consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 30.0
) -> list[tuple[bytes, bytes]]:
    """All (key, value) records of ``topic`` from the beginning up to its current end.

    The end is taken from fetch high-water marks, which every broker reports correctly
    (the embedded broker under-reports ListOffsets(latest)).
    """
    parts = consumer.partitions_for_topic(topic)
    deadline = time.monotonic() + timeout_s
    while not parts:
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(f"no metadata for topic {topic}")
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await asyncio.sleep(0.1)
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    out: list[tuple[bytes, bytes]] = []
    while True:
        batch = await consumer.getmany(*tps, timeout_ms=200)
        for records in batch.values():
            out.extend((r.key or b"", r.value or b"") for r in records)
        done = True
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is None or await consumer.position(tp) < hw:
                done = False
        if done:
            return out
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(f"could not read {topic} to its end within {timeout_s:g} s")
