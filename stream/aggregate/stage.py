"""The aggregate stage: event-time windows of scored posts, kept in faust tables.

It reads :class:`~newswatch.io.schemas.ScoredPost` JSON from the scored topic,
aggregates per topic, entity, source and globally in tumbling and hopping windows
(:mod:`newswatch.stream.windows`), and writes
:class:`~newswatch.io.schemas.WindowStat` records to the windows topic, keyed
``kind:key:window``, record timestamp = window end:

* updates of the newest window of each shape for the keys that changed, coalesced to
  one per ``emit_interval_ms`` (``final=false``);
* one ``final=true`` record per window with data once the watermark passes
  ``end + grace_ms``; the latest record per ``(kind, key, window, start_ms)`` is
  authoritative (a final is re-sent only when a late event raised its ``late``).

State (panes, post ids seen, watermark, what was finalised) lives in faust tables
whose changelog topics are named after the pane size (``stats-pane_60000``), so a
restarted aggregator recovers its windows. Processing is at-least-once (faust commits
offsets after the table changelog is flushed); duplicates are removed by post id.

Every input record is untrusted: one that is not a :class:`ScoredPost` within the schema's
limits, scores a value outside its range, is stamped more than ``classify.max_future_skew_s``
ahead of the clock or holds a string that cannot be encoded again is dead-lettered with its
reason and bytes. A window record Kafka refuses for good (too large, rejected by the broker)
is dead-lettered as ``produce_failed`` (coordinates ``<windows topic>/-1/-1``, the record's
bytes) and the emit goes on; only a Kafka failure past the request timeout crashes the worker.

Deployment limit: one aggregator process per ``app_id``. Windows are keyed by
(kind, key) while the scored topic is keyed by post id, so the tables use key
partitioning (``use_partitioner``) and must all live in one worker; a second worker
in the group would split them. Throughput is bounded by one process.

The faust parts live beside this module: the app (:mod:`.app`), the worker that runs it
until a signal (:mod:`.worker`), the write-back overlay on its tables (:mod:`.overlay`) and
the Tansu work-around (:mod:`.faust_compat`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust
import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.types import EventT

from newswatch.io.kafka import close_client, create_topics, make_producer
from newswatch.io.produce import PRODUCE_FAILED, OutRecord, send_all
from newswatch.io.schemas import RecordError, ScoredPost, WindowStat
from newswatch.io.stage import Stage, StageError
from newswatch.metrics import Metrics
from newswatch.settings import Settings
from newswatch.settings.stream import AggregateSettings
from newswatch.stream.aggregate.app import build_app
from newswatch.stream.aggregate.overlay import StagedTable
from newswatch.stream.panes import PaneBatch
from newswatch.stream.windows import WindowEngine, window_specs

__all__ = [
    "STAGE",
    "AggregateError",
    "Aggregator",
    "export_window_metrics",
    "window_specs",
]

log = logging.getLogger(__name__)

STAGE = "aggregate"


class AggregateError(StageError):
    """The aggregator stopped because Kafka did not take its output within the request timeout.

    Retriable: restarted, it recovers its state from the changelog topics and reads again from
    the last committed offset (nothing acknowledged is lost; re-read posts are deduplicated).
    Exit code 2.
    """


def _parse(raw: bytes | None, max_future_ms: float | None = None, min_ms: float | None = None) -> ScoredPost:
    """A scored record checked against the schema, its value ranges and the clock."""
    if raw is None:
        raise ValueError("empty record")
    sp = ScoredPost.from_json(raw)
    if not (-1.0 <= sp.score <= 1.0 and 0.0 <= sp.topic_prob <= 1.0):
        raise RecordError("invalid_value", "need -1 <= score <= 1 and 0 <= topic_prob <= 1")
    if not all(0.0 <= p <= 1.0 for p in sp.sentiment_probs.values()):
        raise RecordError("invalid_value", "'sentiment_probs' must be probabilities")
    stamp_ms = sp.post.published_at.timestamp() * 1000
    if max_future_ms is not None and stamp_ms > max_future_ms:
        raise RecordError("future_timestamp", f"published_at {sp.post.published_at.isoformat()} is ahead")
    if min_ms is not None and stamp_ms < min_ms:
        raise RecordError("bad_timestamp", f"published_at {sp.post.published_at.isoformat()} is too old")
    return sp


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecordError):
        return exc.reason
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError | RecursionError):
        return "invalid_json"
    if isinstance(exc, KeyError):
        return "missing_field"
    return "invalid_value"


class Aggregator(Stage):
    """The aggregate stage: a faust app with its tables, agent and emit timer.

    Parameters
    ----------
    settings
        The whole settings tree (``kafka``, ``topics``, ``aggregate``, ``metrics``).
    metrics
        Where counters and window gauges go (a fresh registry if omitted).

    faust owns the event loop: ``newswatch aggregate`` runs the stage with
    :func:`~newswatch.stream.aggregate.worker.run_aggregator` (a faust worker that handles
    SIGTERM/SIGINT), which calls :meth:`start`, :meth:`final_flush` and :meth:`stop`.
    """

    name = STAGE
    error = AggregateError
    restart_note = "state is in the changelog, unacknowledged posts are read again"

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        super().__init__(settings, metrics)
        self.specs = window_specs(settings.aggregate)
        self.app = build_app(settings)
        agg, kafka = settings.aggregate, settings.kafka
        # The tables are named after the pane size, which the engine computes from the specs:
        # the overlays are attached to them once they exist.
        self._panes, self._seen, self._meta = StagedTable(), StagedTable(), StagedTable()
        self.engine = WindowEngine(
            self.specs,
            agg.grace_ms,
            panes=self._panes,
            seen=self._seen,
            meta=self._meta,
            idle_ms=agg.idle_partition_ms,
            updates_per_step=agg.updates_per_step,
        )
        self.pane_ms = self.engine.pane_ms
        table_kwargs: dict[str, Any] = {
            "default": None,
            "schema": faust.Schema(key_serializer="json", value_serializer="json"),
            "partitions": kafka.partitions,
            "use_partitioner": True,
        }
        self.panes_table = self.app.Table(f"stats-pane_{self.pane_ms}", **table_kwargs)
        self.seen_table = self.app.Table("seen-ids", **table_kwargs)
        self.meta_table = self.app.Table(f"meta-pane_{self.pane_ms}", **table_kwargs)
        self._panes.attach(self.panes_table)
        self._seen.attach(self.seen_table)
        self._meta.attach(self.meta_table)
        self._panes_input = agg.input == "panes"
        self.input_topic_name = settings.topics.panes if self._panes_input else settings.topics.scored
        self.input_topic = self.app.topic(
            self.input_topic_name, key_serializer="raw", value_serializer="raw", partitions=kafka.partitions
        )
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._pending: list[EventT] = []
        self._pending_posts = 0  # posts in the pending events (a pane record holds many)
        self._stopping = False
        self._last_offsets: dict[tuple[str, int], int] = {}
        # Highest offset handled per input partition since the last assignment. faust can hand a
        # record over twice after its seek to the committed offset (``Consumer._drain_messages``
        # lets ``offset >= last read`` through): an offset at or below this is a redelivery.
        self._handled: dict[tuple[str, int], int] = {}
        self._last_emit = 0.0
        self._last_state = time.monotonic()
        self._ready = False
        # The classify stage's bounds on event time, enforced again on the scored records.
        self._skew_ms = settings.classify.max_future_skew_s * 1000
        self._oldest_ms = (
            datetime(settings.classify.oldest_published_year, 1, 1, tzinfo=UTC).timestamp() * 1000
        )
        self.app.agent(self.input_topic, name=f"{agg.app_id}-aggregate")(self._process)
        # Ticks at half the interval: a tick one interval after an emit finds slightly less than
        # the interval elapsed (the emit stamps its time after the tick), so a tick of the full
        # interval would emit only every other tick when no input arrives.
        self.app.timer(agg_interval_s(agg) / 2)(self._on_timer)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_rebalance_complete.connect(self._on_rebalanced)
        self.app.on_before_shutdown.connect(self._on_shutdown)

    # -- topics ---------------------------------------------------------------------------------

    def topic_names(self) -> tuple[list[str], list[str]]:
        """(topics with ``kafka.partitions`` partitions, single-partition topics) the app uses."""
        app_id = self.settings.aggregate.app_id
        topics = self.settings.topics
        partitioned = [self.input_topic_name, topics.windows, topics.dead_letter]
        partitioned += [
            t.changelog_topic.get_topic_name() for t in (self.panes_table, self.seen_table, self.meta_table)
        ]
        return partitioned, [f"{app_id}-__assignor-__leader"]

    async def create_topics(self) -> None:
        """Create every topic explicitly (the embedded broker would guess partition counts)."""
        partitioned, single = self.topic_names()
        await create_topics(self.settings.kafka, partitioned)
        await create_topics(self.settings.kafka, single, partitions=1)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the stage's own producer (window records, dead letters); once only.

        faust's consumer, tables and changelogs are started by the app (the worker).
        """
        self._claim_start()
        await self._ensure_producer()

    async def stop(self) -> None:
        """Stop the stage's own producer (idempotent); faust stops the rest."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await close_client(producer, "aggregate producer")

    def _holds_resources(self) -> bool:
        return self._producer is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Wait while faust's agent and timer process, until ``stop`` is set or the stage fails.

        Run inside the app's event loop, after the app was started; raises the
        :class:`AggregateError` that crashed the app.
        """
        while not stop.is_set() and self.failure is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        if self.failure is not None:
            raise self.failure

    @property
    def ready(self) -> bool:
        """The tables are recovered and the partitions assigned, and the stage has not failed."""
        return self._ready and self.failure is None

    async def _on_revoked(self, *args: Any, **kwargs: Any) -> None:
        self._ready = False
        self._handled.clear()  # the next owner of a partition reads it again from the commit

    async def _on_rebalanced(self, *args: Any, **kwargs: Any) -> None:
        # faust sends this signal once the tables are recovered, then resumes the input
        # partitions, seeks them to the committed offsets and only after that resumes flow
        # control, which empties every stream buffer (faust/tables/recovery.py,
        # ``Recovery.on_recovery_completed`` and ``_resume_streams``). Flow control is still
        # active from reading the changelogs, so records fetched in between (a backlog after a
        # restart) were buffered, recorded as read, then dropped: the agent never saw them, and
        # faust's commit steps over a one-record hole (faust-streaming issues #596, #606).
        # Suspended here, those records wait in the conductor until flow control resumes.
        self.app.flow_control.suspend()
        async with self._lock:
            self._flush_state()
            self.engine.reset_index()
            source = self.input_topic_name
            self.engine.assign(tp.partition for tp in self.app.consumer.assignment() if tp.topic == source)
        self._ready = self.failure is None

    async def _on_shutdown(self, *args: Any, **kwargs: Any) -> None:
        await self.stop()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = make_producer(
                self.settings.kafka, client_id=f"{self.settings.kafka.client_id}-aggregate"
            )
            await producer.start()
            self._producer = producer
            self._open_dead_letters(producer, self.settings.topics.dead_letter)
        return self._producer

    # -- processing -----------------------------------------------------------------------------

    async def _process(self, stream: Any) -> None:
        """The agent: aggregate each event at once; flush state, emit and ack in batches.

        Events are acknowledged manually (``noack``), only after the state they changed
        was written to the tables (changelog), so an offset is never committed ahead of
        its aggregate. (``Stream.take`` is avoided: it does not stop on SIGTERM,
        faust-streaming issue #162.)
        """
        async for event in stream.noack().events():
            await self.handle(event)
            if self._emit_due() or self._state_due():
                await self.flush()

    async def handle(self, event: EventT) -> None:
        """Aggregate one record (a pane batch or one scored post, by ``aggregate.input``); a bad
        record goes to the dead-letter topic with its reason."""
        await self._ensure_producer()
        msg = event.message
        m = self.metrics
        async with self._lock:
            if self._stopping:
                return  # not acked: read again after the restart
            tp = (msg.topic, msg.partition)
            if msg.offset <= self._handled.get(tp, -1):
                # Handled already by this worker: counted as a duplicate, acked with the batch, not
                # aggregated, counted late or dead-lettered a second time.
                posts = self._posts_in(event.value)
                m.consumed.labels(STAGE).inc(posts)
                m.duplicates.labels(STAGE).inc(posts)
                self._pending.append(event)
                return
            self._handled[tp] = msg.offset
            self._last_offsets[tp] = msg.offset
            try:
                if self._panes_input:
                    await self._merge_panes(event)
                else:
                    self._add_post(event)
            except StageError:
                raise  # Kafka did not take a dead letter: the stage has failed (see _crash)
            except Exception as exc:  # bad input: dead-letter it, keep going
                m.consumed.labels(STAGE).inc()
                raw = event.value if isinstance(event.value, bytes) else b""
                await self._dead_letter(_reason(exc), f"{type(exc).__name__}: {exc}", msg, raw)
            self._pending.append(event)

    def _add_post(self, event: EventT) -> None:
        """One scored post (``aggregate.input: scored``)."""
        m = self.metrics
        self._pending_posts += 1
        sp = _parse(event.value, time.time() * 1000 + self._skew_ms, self._oldest_ms)
        m.consumed.labels(STAGE).inc()
        outcome = self.engine.add(sp, event.message.partition)
        if outcome == "duplicate":
            m.duplicates.labels(STAGE).inc()
        elif outcome == "late":
            m.late_events.labels(STAGE).inc()

    async def _merge_panes(self, event: EventT) -> None:
        """One pane batch (``aggregate.input: panes``): rows stamped outside the clock bounds are
        dead-lettered one by one (the classify stage's bounds, checked again), the rest merged."""
        m, msg = self.metrics, event.message
        if not isinstance(event.value, bytes):
            raise ValueError("empty record")
        batch = PaneBatch.from_json(event.value)
        m.consumed.labels(STAGE).inc(len(batch.rows))  # the aggregator counts posts, not records
        self._pending_posts += len(batch.rows)
        newest, oldest = time.time() * 1000 + self._skew_ms, self._oldest_ms
        if any(not oldest <= r.ts <= newest for r in batch.rows):
            kept = []
            for r in batch.rows:
                if oldest <= r.ts <= newest:
                    kept.append(r)
                    continue
                reason = "future_timestamp" if r.ts > newest else "bad_timestamp"
                stamp = datetime.fromtimestamp(r.ts / 1000, UTC).isoformat() if abs(r.ts) < 2**45 else r.ts
                detail = f"post {r.id!r} of {batch.src}/{batch.partition}@{r.offset}: published_at {stamp}"
                await self._dead_letter(reason, detail, msg, msgspec.json.encode(r))
            batch = msgspec.structs.replace(batch, rows=kept, panes=[])  # the partial sums no longer hold
        outcome = self.engine.add_batch(batch, msg.partition)
        if outcome.duplicate:
            m.duplicates.labels(STAGE).inc(outcome.duplicate)
        if outcome.late:
            m.late_events.labels(STAGE).inc(outcome.late)

    def _posts_in(self, value: Any) -> int:
        """How many posts a record holds (for counting a redelivered one)."""
        if not self._panes_input:
            return 1
        try:
            return len(PaneBatch.from_json(value).rows)
        except Exception:
            return 1

    async def _dead_letter(self, reason: str, detail: str, msg: Any, raw: bytes) -> None:
        dlq = self.dead_letters
        assert dlq is not None
        letter = dlq.make(reason, detail[:500], msg.topic, msg.partition, msg.offset, raw)
        try:
            await dlq.send([letter])
        except KafkaError as kafka_exc:
            raise await self._crash(f"a dead letter to {dlq.topic}", kafka_exc) from kafka_exc

    async def final_flush(self) -> None:
        """Before stopping: emit, flush, write the changelog, commit the acked offsets.

        The emit is not left to the timer: windows the watermark closed since the last emit get
        their final records now (a restarted worker with no new input would also emit them, but
        only once it is up again).
        """
        if self._producer is None and not self._ready:
            return  # nothing handled and the tables not recovered yet: nothing to write
        await self.flush(force_emit=self._ready, force_state=True, final=True)
        async with self._lock:
            self._stopping = True  # no state change after this point: all of it is flushed below
        await self.app.producer.flush()
        await self.app.consumer.commit()

    def _emit_due(self) -> bool:
        return time.monotonic() - self._last_emit >= agg_interval_s(self.settings.aggregate)

    def _state_due(self) -> bool:
        """Whether the staged state is to be written now: ``max_batch`` posts were aggregated since
        the last write, or ``commit_interval_ms`` passed (each write is one changelog record per
        changed pane, so it is not done at every emit)."""
        agg = self.settings.aggregate
        return (
            self._pending_posts >= agg.max_batch
            or time.monotonic() - self._last_state >= agg.commit_interval_ms / 1000.0
        )

    async def flush(
        self, *, force_emit: bool = False, force_state: bool = False, final: bool = False
    ) -> None:
        """Emit due windows (``final``: every pending update too, before a stop); when due, write
        the staged state to the tables, then ack the events it holds (an event is acked only once
        its state is written)."""
        async with self._lock:
            if self._stopping:
                return
            if force_emit or self._emit_due():
                await self._emit(all_updates=final)
            if not (force_state or self._state_due()):
                return
            self._flush_state()
            self._last_state = time.monotonic()
            pending, self._pending = self._pending, []
            self._pending_posts = 0
            for event in pending:
                event.ack()
            offsets, self._last_offsets = self._last_offsets, {}
        self._update_lag(offsets)

    async def _on_timer(self) -> None:
        """Emit coalesced updates and finals, and ack, even when no new events arrive.

        Also when none arrived since a restart: finals of windows closed by the recovered
        watermark are emitted then. Not before the tables are recovered (``ready``).
        """
        if not self._ready:
            return
        if self._pending or self._emit_due():
            await self.flush()

    async def _emit(self, *, all_updates: bool = False) -> None:
        stats = self.engine.collect(all_updates=all_updates)
        self._last_emit = time.monotonic()
        watermark = self.engine.watermark
        if watermark is not None:
            self.metrics.watermark.labels(STAGE).set(watermark / 1000)
        if stats:
            producer = await self._ensure_producer()
            topic = self.settings.topics.windows
            try:
                refused = await send_all(
                    producer, [OutRecord(topic, v, k, ts) for k, v, ts in map(_record, stats)]
                )
            except KafkaError as exc:
                raise await self._crash(f"{len(stats)} window records to {topic}", exc) from exc
            if refused:  # refused for good (too large, rejected): dead-lettered, the emit goes on
                dlq = self.dead_letters
                assert dlq is not None
                letters = [dlq.make(PRODUCE_FAILED, r.detail, topic, -1, -1, r.record.value) for r in refused]
                try:
                    await dlq.send(letters)
                except KafkaError as exc:
                    raise await self._crash(f"a dead letter to {dlq.topic}", exc) from exc
            self.metrics.produced.labels(STAGE).inc(len(stats) - len(refused))
            export_window_metrics(self.metrics, stats)
        self.engine.commit()

    async def _crash(self, what: str, exc: KafkaError) -> StageError:
        """:meth:`~Stage.fail`, then stop the whole worker, not only the agent or timer that saw it.

        Called with the lock held. A failed send of our own producer means Kafka did not take
        it within ``kafka.request_timeout_ms`` (aiokafka reconnects and retries until then): the
        broker has been unreachable that long. Nothing is acknowledged from here on
        (``_stopping``), so the committed offsets stay behind every event whose output is
        missing. Raised in the agent alone, the error would only restart the agent (faust's
        default ``mode.OneForOneSupervisor``) and the worker would go on without the window
        updates of the failed emit, or with its offsets held back by an unacknowledged dead
        letter; so the app is crashed and the process exits non-zero (``run_aggregator``
        raises the error). Restarted, it resumes from the changelog and the committed offsets.
        """
        self._stopping = True
        self._ready = False
        first = self.failure is None
        error = self.fail(what, exc)
        if first:
            await self.app.crash(error)
        return error

    def _flush_state(self) -> None:
        self.engine.checkpoint()  # the watermark is written with the state it was computed from
        for staged in (self._panes, self._seen, self._meta):
            staged.flush()

    def _update_lag(self, last_offsets: dict[tuple[str, int], int]) -> None:
        consumer = self.app.consumer
        for (topic, partition), offset in last_offsets.items():
            with contextlib.suppress(Exception):
                high = consumer.highwater(faust.types.TP(topic, partition))
                if high is not None:
                    self.metrics.consumer_lag.labels(STAGE, topic, str(partition)).set(
                        max(0, high - offset - 1)
                    )


def export_window_metrics(metrics: Metrics, stats: Sequence[WindowStat]) -> None:
    """Window gauges from emitted updates (entity/source keys go through the bounded top-K)."""
    for s in stats:
        if not s.final:
            metrics.set_window(s.kind, s.key, s.window, s.count, s.mean_score, s.negative_share)


def agg_interval_s(agg: AggregateSettings) -> float:
    """The emit interval in seconds."""
    return agg.emit_interval_ms / 1000.0


def _record(stat: WindowStat) -> tuple[bytes, bytes, int]:
    """(key, value, timestamp) of a windows-topic record: key ``kind:key:window``, time = window end."""
    key = f"{stat.kind}:{stat.key}:{stat.window}".encode()
    return key, stat.to_json(), stat.end_ms
