"""Small Kafka helper of the alerts stages: reading a log topic to its end."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from newswatch.errors import NewswatchError
from newswatch.io.broker_compat import refresh_metadata

log = logging.getLogger(__name__)


class KafkaUnavailableError(NewswatchError):
    """The brokers could not be reached or did not answer in time."""

    retriable = True


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
        await refresh_metadata(consumer)
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
