"""Writes rejected input to the dead-letter topic, with the reason and the original bytes.

Each record is a :class:`~newswatch.io.schemas.DeadLetter` keyed by
``"<topic>/<partition>/<offset>"`` (so a redelivered message lands on the same
partition and readers can deduplicate). The raw bytes are kept exactly; only a payload
larger than ``max_raw_bytes`` (a ``too_large`` message) is cut, and its detail then
records the original length and SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from aiokafka import AIOKafkaProducer

from newswatch.io.schemas import DeadLetter
from newswatch.metrics import Metrics

__all__ = ["DeadLetterWriter"]


class DeadLetterWriter:
    """Sends :class:`DeadLetter` records through a producer the caller owns.

    Parameters
    ----------
    producer
        A started producer (not stopped by this class).
    topic
        The dead-letter topic.
    stage
        Name of the rejecting stage (the ``stage`` label of the metric).
    metrics
        ``dead_lettered{stage, reason}`` is incremented once the record is acknowledged.
    max_raw_bytes
        Larger raw payloads are truncated to this many bytes.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        stage: str,
        metrics: Metrics,
        max_raw_bytes: int = 512 * 1024,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.stage = stage
        self.metrics = metrics
        self.max_raw_bytes = max_raw_bytes

    def make(
        self, reason: str, detail: str, topic: str, partition: int, offset: int, raw: bytes
    ) -> DeadLetter:
        """Build the record (truncating oversized payloads, noting it in ``detail``)."""
        if len(raw) > self.max_raw_bytes:
            digest = hashlib.sha256(raw).hexdigest()
            detail = f"{detail}; raw truncated from {len(raw)} bytes, sha256={digest}"
            raw = raw[: self.max_raw_bytes]
        return DeadLetter(
            stage=self.stage,
            reason=reason,
            detail=detail,
            topic=topic,
            partition=partition,
            offset=offset,
            raw=raw,
            at_ms=int(time.time() * 1000),
        )

    async def send(self, letters: list[DeadLetter]) -> None:
        """Produce ``letters`` and wait for the acknowledgements; then count them."""
        futures = []
        for letter in letters:
            key = f"{letter.topic}/{letter.partition}/{letter.offset}".encode()
            futures.append(await self.producer.send(self.topic, value=letter.to_json(), key=key))
        if futures:
            await asyncio.gather(*futures)
        for letter in letters:
            self.metrics.dead_lettered.labels(self.stage, letter.reason).inc()
