"""Producing a stage's output when one record can be refused: too large, or rejected by the broker.

A record can fail on its own account, not the cluster's: the client refuses one larger than
``max_request_size`` (:data:`~newswatch.io.schemas.MAX_RECORD_BYTES`), a broker one larger than
its ``message.max.bytes``, with a timestamp outside its ``message.timestamp.difference.max.ms``,
or one a policy rejects. Retrying it cannot help, and stopping the stage would only read the same
input again after the restart and fail the same way: a crash loop. :func:`send_all` returns such
records with their error (every stage dead-letters them as ``produce_failed``) and raises only the
errors that mean Kafka itself is unreachable or refuses the stage (a timeout after
``kafka.request_timeout_ms``, authorization): those stay the stage's
:meth:`~newswatch.io.stage.Stage.fail` (exit 2, restart).

A broker refuses a whole batch (every record linger put with the refused one on its partition),
so records of a refused batch are sent again one at a time and only those refused alone are
returned. Sent again, they land after the records that were acknowledged meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)

__all__ = ["PRODUCE_FAILED", "RECORD_ERRORS", "OutRecord", "Refused", "send_all"]

#: Errors about one record (or its batch), not about the cluster: the record is refused for good.
RECORD_ERRORS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
    UnsupportedForMessageFormatError,
    PolicyViolationError,
)

#: The dead-letter reason of a record that could not be produced.
PRODUCE_FAILED = "produce_failed"


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to produce."""

    topic: str
    value: bytes
    key: bytes | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """A record that Kafka refused, and why."""

    record: OutRecord
    error: KafkaError

    @property
    def detail(self) -> str:
        """A readable sentence for the dead letter."""
        error = str(self.error)
        if type(self.error).__name__ not in error:
            error = f"{type(self.error).__name__}: {error}"
        size = len(self.record.value)
        return f"Kafka refused the record for {self.record.topic} ({size} bytes): {error}"[:500]


async def _send(producer: AIOKafkaProducer, rec: OutRecord) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = await producer.send(
        rec.topic, value=rec.value, key=rec.key, timestamp_ms=rec.timestamp_ms
    )
    return future


async def send_all(producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> list[Refused]:
    """Produce ``records`` and wait for every acknowledgement; returns those refused for good.

    Raises the first other error (a :class:`KafkaError` the caller turns into the stage's
    failure) once every record has an answer.
    """
    sent: list[tuple[OutRecord, asyncio.Future[Any]]] = []
    refused: list[Refused] = []
    for rec in records:
        try:
            sent.append((rec, await _send(producer, rec)))
        except RECORD_ERRORS as exc:  # the client's own check (max_request_size)
            refused.append(Refused(rec, exc))
    results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True) if sent else []
    again: list[OutRecord] = []
    first_error: BaseException | None = None
    for (rec, _), result in zip(sent, results, strict=True):
        if isinstance(result, RECORD_ERRORS):
            again.append(rec)
        elif isinstance(result, BaseException) and first_error is None:
            first_error = result
    if first_error is not None:
        raise first_error
    for rec in again:  # alone now: the broker refused its whole batch
        try:
            await (await _send(producer, rec))
        except RECORD_ERRORS as exc:
            refused.append(Refused(rec, exc))
    return refused
