"""Replays a CSV or JSONL file of posts onto the posts topic, in event-time order.

Rows are mapped to the input schema (``id`` ← ``id``/``tweet_id``, ``published_at`` ←
``published_at``/``created_at``, ``entities`` ← ``entities`` or space-separated
``cashtags``; ``source`` defaults to the file's stem), deduplicated on ``id``
(first row wins: StockNet lists a tweet once per ticker) and sorted by ``published_at``.

Pacing: a row published ``d`` seconds after the first one is sent ``d / speed`` seconds
after the start (``speed=1`` real time, ``60`` a minute per second, ``0`` as fast as
possible); idle gaps longer than ``max_gap_s`` (in replay time) are cut to it. Each
record is keyed by post id and carries Kafka timestamp = the moment it is sent (the
publish time used for end-to-end latency); ``published_at`` stays the event time unless
``retime`` maps it onto the replay clock. JSONL lines that are not JSON objects are sent
unchanged (the classify stage dead-letters them), so a replay never drops input.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from newswatch.errors import NewswatchError
from newswatch.io.broker_compat import refresh_metadata
from newswatch.io.kafka import make_consumer, make_producer
from newswatch.io.schemas import WindowStat
from newswatch.metrics import Metrics
from newswatch.settings import KafkaSettings
from newswatch.timeparse import epoch_ms, parse_iso_or_none

__all__ = [
    "ReplayError",
    "ReplayRecord",
    "ReplayResult",
    "closed_until",
    "late_at_aggregator",
    "load_records",
    "replay",
    "schedule",
]

_ACK_CHUNK = 500


class ReplayError(NewswatchError):
    """The replay file cannot be read."""


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """One message to publish: its key, its JSON object (or raw bytes) and event time."""

    key: bytes | None
    obj: dict[str, Any] | None
    raw: bytes | None
    event_ms: int | None

    def payload(self, published_at: datetime | None = None) -> bytes:
        """The bytes to send, with ``published_at`` replaced when given."""
        if self.obj is None:
            return self.raw or b""
        obj = self.obj if published_at is None else {**self.obj, "published_at": published_at.isoformat()}
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did."""

    sent: int
    duplicates: int
    duration_s: float


async def closed_until(
    kafka: KafkaSettings, windows_topic: str, tail: int = 500, timeout_s: float = 10.0
) -> int | None:
    """The end of the newest final window on ``windows_topic`` (None: none, or no such topic).

    The aggregator emits a window as final once its watermark passed the end plus the grace,
    so its watermark is at least this plus ``aggregate.grace_ms``: a replayed post older than
    this end is late. Reads the last ``tail`` records of each partition only.
    """
    consumer = make_consumer(kafka, group_id=None)
    await consumer.start()
    try:
        await refresh_metadata(consumer)
        parts = consumer.partitions_for_topic(windows_topic)
        if not parts:
            return None
        tps = [TopicPartition(windows_topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - tail))
        newest: int | None = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(*tps, timeout_ms=200)
            for records in batch.values():
                for r in records:
                    try:
                        stat = WindowStat.from_json(r.value or b"")
                    except ValueError:
                        continue
                    if stat.final and (newest is None or stat.end_ms > newest):
                        newest = stat.end_ms
            if await _at_end(consumer, tps):
                break
        return newest
    finally:
        await consumer.stop()


async def _at_end(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> bool:
    for tp in tps:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True


def late_at_aggregator(
    records: Sequence[ReplayRecord],
    offsets_s: Sequence[float],
    *,
    partitions: int,
    grace_ms: int,
    idle_ms: int,
    retime: bool = False,
    watermark_ms: int | None = None,
) -> int:
    """How many of ``records`` the aggregator will count late (at least), by its own rules.

    The aggregator's watermark is the smallest largest-event-time over the feeds (a source on
    a partition) that delivered within ``idle_ms``; a post more than ``grace_ms`` behind it is
    late (:mod:`newswatch.stream.windows`). This replays that rule over the records in send
    order (``offsets_s`` from :func:`schedule`), each on the partition Kafka's default
    partitioner gives its key. It assumes the classify stage keeps up with the replay and an
    aggregator whose watermark is ``watermark_ms`` (None: one that has seen nothing; see
    :func:`closed_until`, a lower bound of a running aggregator's watermark, which makes
    the count a lower bound too). With ``retime`` every post is stamped with its send time,
    in order: none is late.

    >>> recs = [ReplayRecord(b"a", {"source": "s"}, None, t) for t in (0, 600_000, 1_000)]
    >>> late_at_aggregator(recs, [0.0, 0.0, 0.0], partitions=1, grace_ms=120_000, idle_ms=5_000)
    1
    """
    if retime:
        return 0
    partitioner = DefaultPartitioner()
    everyone = list(range(max(1, partitions)))
    feed_max: dict[tuple[int, str], int] = {}
    feed_seen: dict[tuple[int, str], float] = {}
    wm: int | None = watermark_ms
    late = 0
    for record, sent_s in zip(records, offsets_s, strict=True):
        if record.event_ms is None or record.obj is None:
            continue  # not a post: the classify stage dead-letters it
        ts = record.event_ms
        if wm is not None and ts < wm - grace_ms:
            late += 1
            continue
        part = partitioner(record.key, everyone, everyone) if record.key is not None else 0
        feed = (part, str(record.obj.get("source", "")))
        feed_max[feed] = max(ts, feed_max.get(feed, ts))
        feed_seen[feed] = sent_s
        holding = [f for f, seen in feed_seen.items() if sent_s - seen < idle_ms / 1000.0]
        candidate = min(feed_max[f] for f in holding)
        wm = candidate if wm is None else max(wm, candidate)
    return late


def _event_ms(value: Any) -> int | None:
    parsed = parse_iso_or_none(value)
    return epoch_ms(parsed) if parsed is not None else None


def _from_row(row: dict[str, Any], default_source: str) -> dict[str, Any]:
    """Map a CSV/JSON row to the input schema (unknown columns are dropped for CSV)."""
    post: dict[str, Any] = {
        "id": row.get("id") if row.get("id") not in (None, "") else row.get("tweet_id"),
        "text": row.get("text"),
        "source": row.get("source") or default_source,
        "published_at": row.get("published_at") or row.get("created_at"),
    }
    for name in ("url", "author", "lang"):
        if row.get(name) not in (None, ""):
            post[name] = row[name]
    entities = row.get("entities")
    if isinstance(entities, list):
        post["entities"] = entities
    elif isinstance(row.get("cashtags"), str) and row["cashtags"].strip():
        post["entities"] = [f"${t.upper()}" for t in row["cashtags"].split()]
    return post


def _iter_rows(path: Path) -> Iterable[tuple[dict[str, Any] | None, bytes]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                yield row, b""
    elif suffix in (".jsonl", ".ndjson", ".json"):
        with path.open("rb") as fh:
            for line in fh:
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError):
                    obj = None
                yield (obj if isinstance(obj, dict) else None), line
    else:
        raise ReplayError(f"{path}: unknown format {suffix!r}; use a .csv or .jsonl file")


def load_records(
    path: str | Path, source: str | None = None, limit: int | None = None
) -> tuple[list[ReplayRecord], int]:
    """Read, map, deduplicate on id and sort ``path`` by event time.

    Returns the records and the number of duplicate rows dropped. Rows without a readable
    timestamp keep the time of the row before them.
    """
    path = Path(path)
    if not path.is_file():
        raise ReplayError(f"{path}: no such file")
    default_source = source or path.stem
    seen: set[str] = set()
    duplicates = 0
    records: list[ReplayRecord] = []
    last_ms: int | None = None
    try:
        for row, raw in _iter_rows(path):
            if row is None:
                records.append(ReplayRecord(None, None, raw, last_ms))
            else:
                obj = _from_row(row, default_source)
                ident = obj.get("id")
                if ident is not None and not isinstance(ident, dict | list):
                    if str(ident) in seen:
                        duplicates += 1
                        continue
                    seen.add(str(ident))
                event = _event_ms(obj.get("published_at"))
                last_ms = event if event is not None else last_ms
                key = str(ident).encode() if ident is not None else None
                records.append(ReplayRecord(key, obj, None, last_ms))
            if limit is not None and len(records) >= limit:
                break
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReplayError(f"{path}: cannot read: {exc}") from exc
    first = next((r.event_ms for r in records if r.event_ms is not None), 0)
    records.sort(key=lambda r: r.event_ms if r.event_ms is not None else first)
    return records, duplicates


def schedule(event_ms: Sequence[int | None], speed: float, max_gap_s: float | None = None) -> list[float]:
    """Send offsets in seconds from the start for events at ``event_ms`` (sorted).

    >>> schedule([0, 60_000, 120_000, 7_200_000], speed=60, max_gap_s=10)
    [0.0, 1.0, 2.0, 12.0]
    >>> schedule([5, 10], speed=0)
    [0.0, 0.0]
    """
    if speed < 0:
        raise ReplayError(f"speed must be >= 0, got {speed}")
    offsets: list[float] = []
    at = 0.0
    prev: int | None = None
    for ms in event_ms:
        if speed > 0 and ms is not None and prev is not None:
            gap = max(0.0, (ms - prev) / 1000.0 / speed)
            at += gap if max_gap_s is None else min(gap, max_gap_s)
        if ms is not None:
            prev = ms
        offsets.append(at)
    return offsets


async def replay(
    records: Sequence[ReplayRecord],
    kafka: KafkaSettings,
    topic: str,
    *,
    speed: float = 0.0,
    max_gap_s: float | None = None,
    retime: bool = False,
    metrics: Metrics | None = None,
    progress: bool = False,
    producer: AIOKafkaProducer | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayResult:
    """Publish ``records`` to ``topic`` on the schedule of :func:`schedule`; wait for every ack.

    ``retime`` rewrites ``published_at`` to the wall-clock moment each record is sent
    (so old data lands in live windows). A ``producer`` may be passed in (then not stopped).
    """
    offsets = schedule([r.event_ms for r in records], speed, max_gap_s)
    own = producer is None
    prod = producer or make_producer(kafka)
    if own:
        await prod.start()
    started = clock()
    pending: list[asyncio.Future[Any]] = []
    bar = _Progress(len(records)) if progress else None
    try:
        for i, (record, offset) in enumerate(zip(records, offsets, strict=True)):
            delay = started + offset - clock()
            if delay > 0:
                if pending:  # acknowledge what was sent before idling
                    await _ack(pending, metrics, bar)
                    pending = []
                    delay = started + offset - clock()
                await asyncio.sleep(max(0.0, delay))
            now_ms = int(time.time() * 1000)
            published = datetime.fromtimestamp(now_ms / 1000, UTC) if retime else None
            pending.append(
                await prod.send(topic, value=record.payload(published), key=record.key, timestamp_ms=now_ms)
            )
            if len(pending) >= _ACK_CHUNK or i == len(records) - 1:
                await _ack(pending, metrics, bar)
                pending = []
    finally:
        if bar is not None:
            bar.close()
        if own:
            await prod.stop()
    return ReplayResult(sent=len(records), duplicates=0, duration_s=clock() - started)


async def _ack(pending: list[asyncio.Future[Any]], metrics: Metrics | None, bar: _Progress | None) -> None:
    await asyncio.gather(*pending)
    if metrics is not None:
        metrics.produced.labels("replay").inc(len(pending))
    if bar is not None:
        bar.advance(len(pending))


class _Progress:
    """A rich progress bar on stderr."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("replay"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.0f} posts/s"),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
            transient=False,
        )
        self._task = self._progress.add_task("replay", total=total, rate=0.0)
        self._started = time.monotonic()
        self._done = 0
        self._progress.start()

    def advance(self, n: int) -> None:
        self._done += n
        rate = self._done / max(1e-6, time.monotonic() - self._started)
        self._progress.update(self._task, advance=n, rate=rate)

    def close(self) -> None:
        self._progress.stop()
