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

Batches
-------
:func:`send_all` is batch-shaped: it does not await one ``producer.send`` per record. It puts
each record on the partition ``producer.send`` would choose (:func:`partition_for`: the murmur2
hash of the key over the topic's partitions, as aiokafka's ``DefaultPartitioner``; a record
without a key goes to the next partition in turn), appends the records of each partition, in
order, to batches of ``producer.create_batch()`` (a new one whenever one is full), submits them
with ``producer.send_batch`` and waits for every batch's acknowledgement. The client's own size
check (``max_request_size``) is made here as ``producer.send`` makes it, with the same error.
A producer this path cannot mirror exactly (another partitioner, key or value serializers, or
not an :class:`~aiokafka.AIOKafkaProducer`) is sent to record by record, as before.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

__all__ = [
    "PRODUCE_FAILED",
    "RECORD_ERRORS",
    "OutRecord",
    "Refused",
    "murmur2",
    "murmur2_many",
    "partition_for",
    "send_all",
]

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


# --------------------------------------------------------------------------------- partitioning
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{n}I") for n in range(65)]


def murmur2(data: bytes) -> int:
    """The Kafka clients' murmur2 hash of ``data`` (:func:`aiokafka.partitioner.murmur2`,
    twice as fast: the 32-bit words are unpacked at once).

    >>> from aiokafka.partitioner import murmur2 as reference
    >>> all(murmur2(k) == reference(k) for k in (b"", b"a", b"ab", b"abc", b"418157151946035200"))
    True
    """
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    end = words << 2
    if words:
        unpack = _WORDS[words].unpack_from if words < len(_WORDS) else struct.Struct(f"<{words}I").unpack_from
        for k in unpack(data):
            k = (k * _M) & _MASK
            k = ((k ^ (k >> 24)) * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra:
        if extra == 3:
            h ^= data[end + 2] << 16
        if extra >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


_U32 = np.uint32
#: Keys of one length hashed together with numpy from this many on (below, one by one).
_VECTOR_MIN = 16


def murmur2_many(keys: Sequence[bytes]) -> list[int]:
    """:func:`murmur2` of each key: keys of the same length are hashed together, as columns of
    32-bit words in numpy (whose uint32 products wrap as the hash's ``& 0xFFFFFFFF`` does).

    >>> keys = [b"%018d" % (418157151946035200 + i) for i in range(40)] + [b"", b"k"]
    >>> murmur2_many(keys) == [murmur2(k) for k in keys]
    True
    """
    out = [0] * len(keys)
    by_length: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(i)
    m = _U32(_M)
    for length, where in by_length.items():
        if len(where) < _VECTOR_MIN:
            for i in where:
                out[i] = murmur2(keys[i])
            continue
        rows = np.frombuffer(b"".join([keys[i] for i in where]), dtype=np.uint8).reshape(len(where), length)
        h = np.full(len(where), (0x9747B28C ^ length) & _MASK, dtype=np.uint32)
        words = length >> 2
        end = words << 2
        if words:
            columns = np.ascontiguousarray(rows[:, :end]).view("<u4")
            for j in range(words):
                k = columns[:, j].astype(np.uint32) * m
                k = (k ^ (k >> _U32(24))) * m
                h = (h * m) ^ k
        extra = length & 3
        if extra:
            if extra == 3:
                h ^= rows[:, end + 2].astype(np.uint32) << _U32(16)
            if extra >= 2:
                h ^= rows[:, end + 1].astype(np.uint32) << _U32(8)
            h = (h ^ rows[:, end].astype(np.uint32)) * m
        h ^= h >> _U32(13)
        h = h * m
        h ^= h >> _U32(15)
        for i, value in zip(where, h.tolist(), strict=True):
            out[i] = value
    return out


_NEXT = itertools.count()


def partition_for(key: bytes | None, partitions: Sequence[int]) -> int:
    """The partition aiokafka's ``DefaultPartitioner`` gives ``key`` among ``partitions``
    (the list of the topic's partitions as the producer holds them); without a key, the next
    partition in turn (the default partitioner picks one at random: any partition will do).
    """
    if key is None:
        return partitions[next(_NEXT) % len(partitions)]
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def _batch_limit(producer: Any) -> int | None:
    """``max_request_size`` of a producer whose ``send`` the batch path mirrors exactly, else None."""
    if not isinstance(producer, AIOKafkaProducer):
        return None
    if not isinstance(getattr(producer, "_partitioner", None), DefaultPartitioner):
        return None
    if getattr(producer, "_key_serializer", None) or getattr(producer, "_value_serializer", None):
        return None
    limit = getattr(producer, "_max_request_size", None)
    return limit if isinstance(limit, int) else None


def _too_large(rec: OutRecord, limit: int) -> MessageSizeTooLargeError | None:
    """The error ``producer.send`` raises for a record larger than ``max_request_size``."""
    if len(rec.value) + (len(rec.key) if rec.key is not None else 0) + 128 <= limit:
        return None  # the estimate adds less than 128 bytes of framing
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(rec.key, rec.value, [])
    if size <= limit:
        return None
    return MessageSizeTooLargeError(
        f"The message is {size} bytes when serialized which is "
        "larger than the maximum request size you have configured with "
        "the max_request_size configuration"
    )


# ------------------------------------------------------------------------------------ send_all
async def send_all(producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> list[Refused]:
    """Produce ``records`` and wait for every acknowledgement; returns those refused for good.

    Raises the first other error (a :class:`KafkaError` the caller turns into the stage's
    failure) once every record has an answer.
    """
    if not records:
        return []
    limit = _batch_limit(producer)
    if limit is None:
        return await _send_each(producer, records)
    refused: list[Refused] = []
    # per (topic, partition), in the order first seen: its batches and the records of each
    groups: dict[tuple[str, int], list[tuple[Any, list[OutRecord]]]] = {}
    partitions: dict[str, list[int]] = {}
    hashes = iter(murmur2_many([rec.key for rec in records if rec.key is not None]))
    for rec in records:
        topic, key = rec.topic, rec.key
        hashed = next(hashes) if key is not None else 0
        error = _too_large(rec, limit)
        if error is not None:  # the client's own check, as in producer.send
            refused.append(Refused(rec, error))
            continue
        parts = partitions.get(topic)
        if parts is None:  # the list producer.send partitions over
            parts = partitions[topic] = list(await producer.partitions_for(topic))
        if key is None:
            partition = parts[next(_NEXT) % len(parts)]
        else:  # partition_for(key, parts)
            partition = parts[(hashed & 0x7FFFFFFF) % len(parts)]
        tp = (topic, partition)
        batches = groups.get(tp)
        if batches is None:
            batches = groups[tp] = [(producer.create_batch(), [])]
        batch, members = batches[-1]
        if batch.append(key=key, value=rec.value, timestamp=rec.timestamp_ms) is None:  # full
            batch, members = producer.create_batch(), []
            batches.append((batch, members))
            if batch.append(key=key, value=rec.value, timestamp=rec.timestamp_ms) is None:
                raise RuntimeError("an empty batch refused a record")  # aiokafka takes the first always
        members.append(rec)
    sent: list[tuple[list[OutRecord], asyncio.Future[Any]]] = []
    again: list[OutRecord] = []
    # the n-th batch of every partition, then the (n+1)-th: a partition's next batch waits until
    # the sender has taken its previous one, and by then it has taken every partition's
    for n in range(max((len(batches) for batches in groups.values()), default=0)):
        for (topic, partition), batches in groups.items():
            if n < len(batches):
                batch, members = batches[n]
                batch.close()  # complete: sent without lingering
                try:
                    future = await producer.send_batch(batch, topic, partition=partition)
                except RECORD_ERRORS:
                    again += members
                else:
                    sent.append((members, future))
    results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
    first_error: BaseException | None = None
    for (members, _), result in zip(sent, results, strict=True):
        if isinstance(result, RECORD_ERRORS):
            again += members
        elif isinstance(result, BaseException) and first_error is None:
            first_error = result
    if first_error is not None:
        raise first_error
    refused += await _alone(producer, again)
    return refused


async def _send_each(producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> list[Refused]:
    """:func:`send_all` record by record: one awaited ``producer.send`` each (any producer)."""
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
    return refused + await _alone(producer, again)


async def _alone(producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> list[Refused]:
    """Send each record of a refused batch on its own; returns those refused again."""
    refused: list[Refused] = []
    for rec in records:
        try:
            await (await _send(producer, rec))
        except RECORD_ERRORS as exc:
            refused.append(Refused(rec, exc))
    return refused
