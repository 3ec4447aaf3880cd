"""The aggregate stage: a faust-streaming app keeping event-time windows of scored posts.

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

Deployment limit: one aggregator process per ``app_id``. Windows are keyed by
(kind, key) while the scored topic is keyed by post id, so the tables use key
partitioning (``use_partitioner``) and must all live in one worker; a second worker
in the group would split them. Throughput is bounded by one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.types import EventT

from newswatch.errors import NewswatchError
from newswatch.io.deadletter import DeadLetterWriter
from newswatch.io.kafka import create_topics, make_producer, publish
from newswatch.io.schemas import ScoredPost, WindowStat
from newswatch.metrics import Metrics
from newswatch.settings import KafkaSettings, Settings
from newswatch.settings.stream import AggregateSettings
from newswatch.stream.aggregate.faust_compat import TansuCompatApp
from newswatch.stream.windows import WindowEngine, WindowSpec

__all__ = [
    "STAGE",
    "AggregateError",
    "Aggregator",
    "build_app",
    "export_window_metrics",
    "run_aggregator",
    "stat_json",
    "window_specs",
]

log = logging.getLogger(__name__)

STAGE = "aggregate"
_DELETED = object()


class AggregateError(NewswatchError):
    """The aggregator stopped because Kafka did not take its output within the request timeout.

    Retriable: restarted, it recovers its state from the changelog topics and reads again from
    the last committed offset (nothing acknowledged is lost; re-read posts are deduplicated).
    """

    retriable = True


def window_specs(agg: AggregateSettings) -> list[WindowSpec]:
    """The window shapes configured in ``agg``: the tumbling bucket, then each hopping window."""
    specs = [WindowSpec.tumbling(agg.tumbling_ms)]
    specs.extend(WindowSpec.hopping(d, s) for d, s in agg.hopping)
    return list(dict.fromkeys(specs))


def _credentials(kafka: KafkaSettings) -> tuple[Any, Any]:
    """faust ``broker_credentials`` and ``ssl_context`` from the newswatch Kafka settings."""
    kwargs = kafka.client_kwargs()
    ssl_context = kwargs.get("ssl_context")
    if kafka.sasl_mechanism:
        creds = faust.SASLCredentials(
            username=kwargs.get("sasl_plain_username"),
            password=kwargs.get("sasl_plain_password"),
            mechanism=kafka.sasl_mechanism,
            ssl_context=ssl_context if kafka.security_protocol == "SASL_SSL" else None,
        )
        return creds, None
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context), None
    return None, None


def build_app(settings: Settings) -> faust.App:
    """A faust app configured from ``settings`` (no web server, at-least-once).

    With ``kafka.broker_compat == 'tansu'`` it is a
    :class:`~newswatch.stream.aggregate.faust_compat.TansuCompatApp` (true changelog end offsets).
    """
    kafka, agg = settings.kafka, settings.aggregate
    credentials, ssl_context = _credentials(kafka)
    app_cls = TansuCompatApp if kafka.broker_compat == "tansu" else faust.App
    session_s = kafka.session_timeout_ms / 1000.0
    return app_cls(
        agg.app_id,
        broker=[f"kafka://{hp.strip()}" for hp in kafka.bootstrap_servers.split(",") if hp.strip()],
        broker_credentials=credentials,
        ssl_context=ssl_context,
        broker_client_id=f"{kafka.client_id}-aggregate",
        broker_session_timeout=session_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / 1000.0,
        broker_rebalance_timeout=session_s,
        broker_request_timeout=max(kafka.request_timeout_ms / 1000.0, session_s),
        broker_commit_interval=agg.commit_interval_ms / 1000.0,
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_allow_declare=True,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=agg.data_dir,
        store="memory://",
        table_standby_replicas=0,
        producer_acks=-1,
        producer_linger=0.01,
        autodiscover=False,
        # Events are acked only after their state is flushed (see Aggregator._process); on stop
        # faust must not wait for acks the stopped timer can no longer give: unacked events are
        # simply read again after a restart (and deduplicated).
        stream_wait_empty=False,
    )


class _Staged(MutableMapping[str, Any]):
    """A write-back overlay on a faust table: one changelog record per key and batch.

    Reads go through the table. (Reading the store's dict directly is faster, but touching
    ``table.data`` before the app runs makes faust hang when it stops the table.)
    """

    def __init__(self, backing: MutableMapping[str, Any]) -> None:
        self.backing = backing
        self.changes: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self.changes:
            value = self.changes[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return self.backing[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.changes[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.changes[key] = _DELETED

    def __contains__(self, key: object) -> bool:
        if key in self.changes:
            return self.changes[key] is not _DELETED
        return key in self.backing

    def __iter__(self) -> Iterator[str]:
        for key in list(self.backing.keys()):
            if key not in self.changes:
                yield key
        for key, value in list(self.changes.items()):
            if value is not _DELETED:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def flush(self) -> None:
        """Write the staged changes to the table (its changelog)."""
        for key, value in self.changes.items():
            if value is _DELETED:
                if key in self.backing:
                    del self.backing[key]
            else:
                self.backing[key] = value
        self.changes.clear()


def _parse(raw: bytes | None) -> ScoredPost:
    if raw is None:
        raise ValueError("empty record")
    return ScoredPost.from_json(raw)


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return "invalid_json"
    if isinstance(exc, KeyError):
        return "missing_field"
    return "invalid_value"


class Aggregator:
    """The aggregate stage as a faust app with its tables, agent and emit timer.

    Parameters
    ----------
    settings
        The whole settings tree (``kafka``, ``topics``, ``aggregate``, ``metrics``).
    metrics
        Where counters and window gauges go (a fresh registry if omitted).

    Run it with :func:`run_aggregator` (a blocking faust worker that owns its event loop
    and handles SIGTERM/SIGINT); the demo starts ``newswatch aggregate`` as a subprocess.
    """

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(top_k_entities=settings.metrics.top_k_entities)
        self.specs = window_specs(settings.aggregate)
        self.app = build_app(settings)
        agg, kafka = settings.aggregate, settings.kafka
        probe = WindowEngine(self.specs, agg.grace_ms, panes={}, seen={}, meta={})
        self.pane_ms = probe.pane_ms
        table_kwargs: dict[str, Any] = {
            "default": None,
            "schema": faust.Schema(key_serializer="json", value_serializer="json"),
            "partitions": kafka.partitions,
            "use_partitioner": True,
        }
        self.panes_table = self.app.Table(f"stats-pane_{self.pane_ms}", **table_kwargs)
        self.seen_table = self.app.Table("seen-ids", **table_kwargs)
        self.meta_table = self.app.Table(f"meta-pane_{self.pane_ms}", **table_kwargs)
        self._panes = _Staged(self.panes_table)
        self._seen = _Staged(self.seen_table)
        self._meta = _Staged(self.meta_table)
        self.engine = WindowEngine(
            self.specs,
            agg.grace_ms,
            panes=self._panes,
            seen=self._seen,
            meta=self._meta,
            idle_ms=agg.idle_partition_ms,
        )
        self.scored_topic = self.app.topic(
            settings.topics.scored, key_serializer="raw", value_serializer="raw", partitions=kafka.partitions
        )
        self._producer: AIOKafkaProducer | None = None
        self._dlq: DeadLetterWriter | None = None
        self._lock = asyncio.Lock()
        self._pending: list[EventT] = []
        self._stopping = False
        self._last_offsets: dict[tuple[str, int], int] = {}
        # Highest offset handled per input partition since the last assignment. faust can hand a
        # record over twice after its seek to the committed offset (``Consumer._drain_messages``
        # lets ``offset >= last read`` through): an offset at or below this is a redelivery.
        self._handled: dict[tuple[str, int], int] = {}
        self._last_emit = 0.0
        self.ready = False
        self.failure: AggregateError | None = None
        self.app.agent(self.scored_topic, name=f"{agg.app_id}-aggregate")(self._process)
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
        partitioned = [topics.scored, topics.windows, topics.dead_letter]
        partitioned += [
            t.changelog_topic.get_topic_name() for t in (self.panes_table, self.seen_table, self.meta_table)
        ]
        return partitioned, [f"{app_id}-__assignor-__leader"]

    async def create_topics(self) -> None:
        """Create every topic explicitly (the embedded broker would guess partition counts)."""
        partitioned, single = self.topic_names()
        await create_topics(self.settings.kafka, partitioned)
        await create_topics(self.settings.kafka, single, partitions=1)

    # -- lifecycle hooks ------------------------------------------------------------------------

    async def _on_revoked(self, *args: Any, **kwargs: Any) -> None:
        self.ready = False
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
            scored = self.settings.topics.scored
            self.engine.assign(tp.partition for tp in self.app.consumer.assignment() if tp.topic == scored)
        self.ready = self.failure is None

    async def _on_shutdown(self, *args: Any, **kwargs: Any) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = make_producer(
                self.settings.kafka, client_id=f"{self.settings.kafka.client_id}-aggregate"
            )
            await producer.start()
            self._producer = producer
            self._dlq = DeadLetterWriter(producer, self.settings.topics.dead_letter, STAGE, self.metrics)
        return self._producer

    # -- processing -----------------------------------------------------------------------------

    async def _process(self, stream: Any) -> None:
        """The agent: aggregate each event at once; flush state, emit and ack in batches.

        Events are acknowledged manually (``noack``), only after the state they changed
        was written to the tables (changelog), so an offset is never committed ahead of
        its aggregate. (``Stream.take`` is avoided: it does not stop on SIGTERM,
        faust-streaming issue #162.)
        """
        agg = self.settings.aggregate
        async for event in stream.noack().events():
            await self.handle(event)
            if len(self._pending) >= agg.max_batch or self._emit_due():
                await self.flush()

    async def handle(self, event: EventT) -> None:
        """Aggregate one event; a bad record goes to the dead-letter topic with its reason."""
        await self._ensure_producer()
        msg = event.message
        m = self.metrics
        async with self._lock:
            if self._stopping:
                return  # not acked: read again after the restart
            m.consumed.labels(STAGE).inc()
            tp = (msg.topic, msg.partition)
            if msg.offset <= self._handled.get(tp, -1):
                # Handled already by this worker: counted as a duplicate, acked with the batch, not
                # aggregated, counted late or dead-lettered a second time.
                m.duplicates.labels(STAGE).inc()
                self._pending.append(event)
                return
            self._handled[tp] = msg.offset
            self._last_offsets[tp] = msg.offset
            try:
                sp = _parse(event.value)
                outcome = self.engine.add(sp, msg.partition)
            except Exception as exc:  # bad input: dead-letter it, keep going
                assert self._dlq is not None
                raw = event.value if isinstance(event.value, bytes) else b""
                detail = f"{type(exc).__name__}: {exc}"[:500]
                letter = self._dlq.make(_reason(exc), detail, msg.topic, msg.partition, msg.offset, raw)
                try:
                    await self._dlq.send([letter])
                except KafkaError as kafka_exc:
                    raise await self._fail(f"a dead letter to {self._dlq.topic}", kafka_exc) from kafka_exc
            else:
                if outcome == "duplicate":
                    m.duplicates.labels(STAGE).inc()
                elif outcome == "late":
                    m.late_events.labels(STAGE).inc()
            self._pending.append(event)

    async def final_flush(self) -> None:
        """Before stopping: emit, flush, write the changelog, commit the acked offsets.

        The emit is not left to the timer: windows the watermark closed since the last emit get
        their final records now (a restarted worker with no new input would also emit them, but
        only once it is up again).
        """
        if self._producer is None and not self.ready:
            return  # nothing handled and the tables not recovered yet: nothing to write
        await self.flush(force_emit=self.ready)
        async with self._lock:
            self._stopping = True  # no state change after this point: all of it is flushed below
        await self.app.producer.flush()
        await self.app.consumer.commit()

    def _emit_due(self) -> bool:
        return time.monotonic() - self._last_emit >= agg_interval_s(self.settings.aggregate)

    async def flush(self, *, force_emit: bool = False) -> None:
        """Emit due windows, write the staged state to the tables, then ack the events."""
        async with self._lock:
            if self._stopping:
                return
            if force_emit or self._emit_due():
                await self._emit()
            self._flush_state()
            pending, self._pending = self._pending, []
            for event in pending:
                event.ack()
            offsets, self._last_offsets = self._last_offsets, {}
        self._update_lag(offsets)

    async def _on_timer(self) -> None:
        """Emit coalesced updates and finals, and ack, even when no new events arrive.

        Also when none arrived since a restart: finals of windows closed by the recovered
        watermark are emitted then. Not before the tables are recovered (``ready``).
        """
        if not self.ready:
            return
        if self._pending or self._emit_due():
            await self.flush()

    async def _emit(self) -> None:
        stats = self.engine.collect()
        self._last_emit = time.monotonic()
        if stats:
            producer = await self._ensure_producer()
            topic = self.settings.topics.windows
            try:
                await publish(producer, topic, [_record(s) for s in stats])
            except KafkaError as exc:
                raise await self._fail(f"{len(stats)} window records to {topic}", exc) from exc
            self.metrics.produced.labels(STAGE).inc(len(stats))
            export_window_metrics(self.metrics, stats)
        self.engine.commit()

    async def _fail(self, what: str, exc: KafkaError) -> AggregateError:
        """Stop the whole worker, not only the agent or timer that saw it: Kafka refused our output.

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
        self.ready = False
        timeout_ms = self.settings.kafka.request_timeout_ms
        error = AggregateError(
            f"Kafka at {self.settings.kafka.bootstrap_servers} did not take {what} within "
            f"request_timeout_ms={timeout_ms} ({type(exc).__name__}: {exc}); stopping so the "
            "aggregator is restarted (state is in the changelog, unacknowledged posts are read again)"
        )
        if self.failure is None:
            self.failure = error
            log.error("aggregate: %s", error)
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
    return key, stat_json(stat), stat.end_ms


def stat_json(stat: WindowStat) -> bytes:
    """``stat.to_json()`` without ``dataclasses.asdict``'s deep copies (the aggregator's hot path)."""
    d = {f: getattr(stat, f) for f in _STAT_FIELDS}
    d["examples"] = list(stat.examples)
    return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()


_STAT_FIELDS = tuple(f.name for f in dataclasses.fields(WindowStat))


class _Worker(faust.Worker):
    """faust's worker without the terminal spinner, whose handler puts the root logger at DEBUG
    (every aiokafka send then builds a log record: a measurable cost per event)."""

    before_stop: Callable[[], Awaitable[None]] | None = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        logger.setLevel(level or logging.WARNING)

    stop_timeout_s: float = 20.0
    crash_stop_timeout_s: float = 10.0
    _watchdog: threading.Timer | None = None

    def _arm_watchdog(self, after_s: float, code: int, error: str = "") -> None:
        if self._watchdog is None:
            timer = threading.Timer(after_s, _force_exit, args=(after_s, code, error))
            timer.daemon = True
            timer.start()
            self._watchdog = timer

    def on_worker_shutdown(self) -> None:
        """After a crash too, faust's stop must not hang: it does while the broker is down.

        Stopping, faust commits, and its commit first flushes the changelog producer, which
        waits for a broker that is gone (up to ``producer_request_timeout``, 20 minutes). Nothing
        is lost by not waiting: offsets are only committed after the changelog was flushed. The
        exit code is the one ``newswatch aggregate`` gives for the error (2 for ours).
        """
        reason = self.crash_reason
        if reason is not None:
            code, error = (2, str(reason)) if isinstance(reason, NewswatchError) else (1, repr(reason))
            self._arm_watchdog(self.crash_stop_timeout_s, code, error)

    async def _stop_on_signal(self, signal: Any) -> None:
        """On SIGTERM/SIGINT: flush (emit, write state, ack, commit) first, then stop.

        faust can hang while stopping its tables when it stops in the middle of a backlog
        (seen here; compare faust-streaming issue #162). Everything is durable after the
        flush, so a watchdog ends the process if the orderly stop takes longer than
        ``stop_timeout_s``.
        """
        if self.before_stop is not None:
            try:
                await asyncio.wait_for(self.before_stop(), timeout=10.0)
            except Exception as exc:  # stopping anyway: unacked events are re-read after a restart
                log.warning("aggregate: final flush failed: %r", exc)
        self._arm_watchdog(self.stop_timeout_s, 0)
        await super()._stop_on_signal(signal)


def _force_exit(after_s: float, code: int, error: str) -> None:
    log.warning("aggregate: faust did not stop within %.0f s; exiting with code %d", after_s, code)
    if error:
        print(f"newswatch aggregate: error: {error}", file=sys.stderr)
    logging.shutdown()
    os._exit(code)


def run_aggregator(settings: Settings, metrics: Metrics | None = None, *, log_level: str = "warning") -> int:
    """Create the topics, then run the aggregator as a faust worker until SIGTERM/SIGINT.

    Blocking: the worker owns the event loop. It serves ``/metrics``, ``/healthz`` and
    ``/readyz`` on ``settings.metrics`` (no faust web server). Returns the exit code; raises
    :class:`AggregateError` when it stopped because Kafka did not take its output (a broker
    outage longer than ``kafka.request_timeout_ms`` while it had output to write).
    """
    from newswatch.io.http import StageServer

    aggregator = Aggregator(settings, metrics)
    asyncio.run(aggregator.create_topics())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = StageServer(
        aggregator.metrics.registry,
        ready=lambda: aggregator.ready,
        host=settings.metrics.host,
        port=settings.metrics.port,
    )

    @aggregator.app.task
    async def _serve() -> None:
        await server.start()
        log.warning("aggregate: metrics on %s/metrics", server.url)

    async def _stop_server(*args: Any, **kwargs: Any) -> None:
        await server.stop()

    aggregator.app.on_before_shutdown.connect(_stop_server)
    worker = _Worker(aggregator.app, loop=loop, loglevel=log_level, quiet=True, redirect_stdouts=False)
    worker.before_stop = aggregator.final_flush
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    if aggregator.failure is not None:
        raise aggregator.failure
    return code
