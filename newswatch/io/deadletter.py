"""Writes rejected input to the dead-letter topic, with the reason and the original bytes.

Each record is a :class:`~newswatch.io.schemas.DeadLetter` keyed by
``"<topic>/<partition>/<offset>"`` (so a redelivered message lands on the same
partition and readers can deduplicate). The raw bytes are kept exactly; only a payload
larger than ``max_raw_bytes`` (a ``too_large`` message) is cut, and its detail then
records the original length and SHA-256. A dead letter that Kafka refuses for good (a broker
whose ``message.max.bytes`` is below it, or a record rejected for its own sake) is sent again
with a 1 KiB prefix of the raw bytes and their SHA-256, so a record too large for the broker
never stops a stage through its own dead letter.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

from aiokafka import AIOKafkaProducer

from newswatch.io.produce import OutRecord, send_all
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
        """Produce ``letters`` and wait for the acknowledgements; then count them.

        Raises the producer's error when Kafka does not take them (a refused letter is sent
        again cut to :data:`REFUSED_RAW_BYTES` first, and its error raised only if refused again).
        """
        records = [self._record(letter) for letter in letters]
        refused = await send_all(self.producer, records)
        if refused:
            by_record = {id(r): letter for r, letter in zip(records, letters, strict=True)}
            again = [self._record(_shrunk(by_record[id(r.record)], r.detail)) for r in refused]
            still = await send_all(self.producer, again)
            if still:
                raise still[0].error
        for letter in letters:
            self.metrics.dead_lettered.labels(self.stage, letter.reason).inc()

    def _record(self, letter: DeadLetter) -> OutRecord:
        key = f"{letter.topic}/{letter.partition}/{letter.offset}".encode()
        return OutRecord(self.topic, letter.to_json(), key)


#: The raw bytes a dead letter keeps when Kafka refused the whole of them.
REFUSED_RAW_BYTES = 1024


def _shrunk(letter: DeadLetter, why: str) -> DeadLetter:
    """``letter`` with a prefix of its raw bytes, their length and SHA-256 in the detail."""
    digest = hashlib.sha256(letter.raw).hexdigest()
    detail = (
        f"{letter.detail}; the dead letter itself was refused ({why[:200]}): raw cut to "
        f"{REFUSED_RAW_BYTES} of {len(letter.raw)} bytes, sha256={digest}"
    )
    return replace(letter, raw=letter.raw[:REFUSED_RAW_BYTES], detail=detail)
