"""Reading dead letters back: counts by reason, samples, and re-publishing the fixed ones.

Every stage writes what it cannot process to a dead-letter topic as a
:class:`~newswatch.io.schemas.DeadLetter` (the reason and the exact bytes). Once the cause is
fixed (a producer corrected, a limit raised), :func:`replay_dead_letters` re-publishes the
original bytes to the topic they were consumed from. A replay is idempotent: each dead
letter replayed is recorded in a compacted topic beside the dead-letter topic
(``<topic>.replayed``, keyed by where the original came from), and a second replay skips it.
A crash between publishing and recording can re-publish one batch; every stage downstream
is idempotent by post id, so that costs nothing.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from newswatch.io.kafka import create_topics, make_consumer, make_producer, publish, unreachable_error
from newswatch.io.logtopic import read_to_end
from newswatch.io.schemas import DeadLetter
from newswatch.settings import KafkaSettings

__all__ = [
    "DeadLetterRead",
    "ReplayOutcome",
    "read_dead_letters",
    "replay_dead_letters",
    "replayed_topic",
    "summarise",
]

_Client = TypeVar("_Client", AIOKafkaConsumer, AIOKafkaProducer)

#: Characters of the original bytes shown per sample.
SAMPLE_CHARS = 200


@dataclass(frozen=True, slots=True)
class DeadLetterRead:
    """One record of a dead-letter topic: parsed, or ``None`` with the bytes when unreadable."""

    raw: bytes
    letter: DeadLetter | None

    @property
    def origin(self) -> str:
        """Where the original came from, ``stage:topic/partition/offset`` (the replay key)."""
        dl = self.letter
        return "" if dl is None else f"{dl.stage}:{dl.topic}/{dl.partition}/{dl.offset}"


def replayed_topic(dead_letter_topic: str) -> str:
    """The compacted topic that records what was replayed from ``dead_letter_topic``."""
    return f"{dead_letter_topic}.replayed"


async def read_dead_letters(
    kafka: KafkaSettings, topic: str, timeout_s: float = 60.0
) -> list[DeadLetterRead]:
    """Every record of ``topic`` from the beginning to its current end."""
    out: list[DeadLetterRead] = []
    for _key, value in await _read_log(kafka, topic, timeout_s):
        try:
            out.append(DeadLetterRead(value, DeadLetter.from_json(value)))
        except (ValueError, KeyError, TypeError):
            out.append(DeadLetterRead(value, None))
    return out


def summarise(reads: Sequence[DeadLetterRead], samples: int = 3) -> dict[str, Any]:
    """Counts by stage and reason, oldest first, with up to ``samples`` examples of each.

    >>> dl = DeadLetter("classify", "invalid_json", "not JSON", "posts", 0, 7, b"{oops", 1_000)
    >>> out = summarise([DeadLetterRead(dl.to_json(), dl), DeadLetterRead(b"??", None)])
    >>> out["total"], out["unreadable"], out["by_reason"][0]["count"]
    (2, 1, 1)
    >>> out["by_reason"][0]["samples"][0]["raw"]
    '{oops'
    """
    counts: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    unreadable = 0
    for read in reads:
        dl = read.letter
        if dl is None:
            unreadable += 1
            continue
        group = (dl.stage, dl.reason)
        counts[group] += 1
        kept = examples.setdefault(group, [])
        if len(kept) < samples:
            kept.append(
                {
                    "origin": read.origin,
                    "detail": dl.detail,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(dl.at_ms / 1000)),
                    "raw": dl.raw[:SAMPLE_CHARS].decode("utf-8", "replace"),
                    "raw_bytes": len(dl.raw),
                }
            )
    by_reason = [
        {"stage": stage, "reason": reason, "count": n, "samples": examples[(stage, reason)]}
        for (stage, reason), n in counts.most_common()
    ]
    return {"total": len(reads), "unreadable": unreadable, "by_reason": by_reason}


@dataclass(slots=True)
class ReplayOutcome:
    """What a replay did: re-published, already replayed before, filtered out, unreadable."""

    published: int = 0
    already_replayed: int = 0
    filtered: int = 0
    unreadable: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(
            {
                "published": self.published,
                "already_replayed": self.already_replayed,
                "filtered": self.filtered,
                "unreadable": self.unreadable,
                "by_topic": self.by_topic,
            }
        )


async def replay_dead_letters(
    kafka: KafkaSettings,
    topic: str,
    *,
    reasons: Sequence[str] = (),
    stages: Sequence[str] = (),
    to_topic: str | None = None,
    batch: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayOutcome:
    """Re-publish the original bytes of the dead letters in ``topic`` that match the filters.

    Each goes to the topic it was consumed from (or ``to_topic``), with its original
    timestamp unknown and so set by the broker. ``reasons``/``stages`` empty means all.
    ``progress(done, total)`` is called after each acknowledged batch.
    """
    marks = replayed_topic(topic)
    await create_topics(kafka, [marks], compacted=[marks])
    done = {key.decode() for key, _ in await _read_log(kafka, marks)}
    reads = await read_dead_letters(kafka, topic)
    outcome = ReplayOutcome()
    todo: list[DeadLetterRead] = []
    for read in reads:
        dl = read.letter
        if dl is None:
            outcome.unreadable += 1
        elif (reasons and dl.reason not in reasons) or (stages and dl.stage not in stages):
            outcome.filtered += 1
        elif read.origin in done:
            outcome.already_replayed += 1
        else:
            todo.append(read)
    producer = await _started(make_producer(kafka), kafka)
    try:
        for i in range(0, len(todo), batch):
            chunk = todo[i : i + batch]
            targets: dict[str, list[tuple[bytes | None, bytes, int | None]]] = {}
            for read in chunk:
                assert read.letter is not None
                target = to_topic or read.letter.topic
                targets.setdefault(target, []).append((None, read.letter.raw, None))
            for target, records in targets.items():
                await publish(producer, target, records)
                outcome.by_topic[target] = outcome.by_topic.get(target, 0) + len(records)
            await publish(producer, marks, [(r.origin.encode(), b"1", None) for r in chunk])
            outcome.published += len(chunk)
            if progress is not None:
                progress(outcome.published, len(todo))
    finally:
        await producer.stop()
    return outcome


async def _read_log(kafka: KafkaSettings, topic: str, timeout_s: float = 60.0) -> list[tuple[bytes, bytes]]:
    consumer = await _started(make_consumer(kafka, group_id=None), kafka)
    try:
        return await read_to_end(consumer, topic, timeout_s)
    finally:
        await consumer.stop()


async def _started(client: _Client, kafka: KafkaSettings) -> _Client:
    """``client`` started, or the one-line "cannot reach Kafka" error (the client closed)."""
    try:
        await client.start()
    except (KafkaError, OSError) as exc:
        await client.stop()
        raise unreachable_error(kafka, exc) from exc
    return client
