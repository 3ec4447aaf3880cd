"""The data plane's ceiling with the model removed: what each stage carries per process (issue 17).

Every stage is the real one, as its own process on the embedded broker (Tansu, or the broker
at ``--bootstrap``), draining a backlog loaded before it starts:

1. **classify**: ``--posts`` StockNet tweets (``../shared/data/stocknet_tweets/…``, deduplicated
   on tweet_id; ids get a ``~cycle`` suffix past the file's 96,826) are published to the posts
   topic, re-timed in their own order onto the last ``posts / --event-rate`` seconds: as dense
   in event time as a live stream at the target rate (none too old, ahead of the clock or
   late). One classify worker process (``bench/ceiling_runner.py``: ``newswatch classify`` with
   ``bench/zero_engine.py``, a test double that answers instantly) scores them, once with the
   settings' ``classify.batch_size`` and once with ``--max-batch``. posts/s = posts after the
   first batch / time from the first to the last scored batch (``scored_ms`` of the scored
   records). Every backlog post must come back scored or dead-lettered (``lost`` = 0).
2. **aggregate**: ``newswatch aggregate`` drains what the default-batch classify run wrote:
   the scored topic (``aggregate.input: scored``, one record per post) and, where the checkout
   has ``aggregate.input``, in the same run the pane records of the same classify run
   (``panes``: one record per batch and partition). posts/s = backlog posts × the share of
   them counted between the first and the last sample at which its ``/metrics`` counter moved
   / that time; drained = the group's committed offsets at the end of its input topic. The
   two modes' windows (the last record of each) must be equal.
3. **alerts**: ``newswatch alerts run`` drains ``--alert-minutes`` of window records of the
   shapes the detectors watch, as the aggregator writes them (an update and the final per
   window and key; the 20 topics, the backlog's ``--alert-entities`` most frequent entities,
   its source and global; rare bursts): windows/s. (The aggregator's own output from a
   backlog this dense in event time is a few thousand updates and no final.)

Each figure comes with the CPU-seconds the stage's process used while draining (a rate per
CPU-second means more than a wall rate on a shared machine) and the broker's. Targets per
process (issue 17): classify ≥ 20,000 posts/s, aggregator ≥ 20,000 posts/s (``meets_target``).
Prints JSON (``--json``: one line); a progress line on stderr::

    python bench/ceiling.py --json                          # 60,000 posts: about 1.5 min on 2 cores
    python bench/ceiling.py --quick --json                  # 3,000 posts: a check that it runs
    python bench/ceiling.py --profile ceiling.prof --json   # + classify, aggregate under cProfile (+5 min)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pstats
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from zero_engine import TOPICS as ZERO_TOPICS  # bench/ is no package: the script's folder is on sys.path

from newswatch.demo.broker import EmbeddedBroker, free_port
from newswatch.demo.replay import ReplayRecord, load_records
from newswatch.demo.stages import StageProcess, stage_process
from newswatch.io.kafka import create_topics, make_producer, publish
from newswatch.io.schemas import DeadLetter, ScoredPost, WindowStat
from newswatch.processes import stop_process
from newswatch.settings import KafkaSettings, Settings, TopicSettings, load_settings
from newswatch.settings.stream import AggregateSettings

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "ceiling_runner.py"
DATA = HERE.parent / ".." / "shared" / "data" / "stocknet_tweets"
DEFAULT_FILE = DATA / "stocknet_tweets_2014_2016.csv"
TARGET_POSTS_PER_S = 20_000
CONSUMED = "newswatch_stream_messages_consumed_total"
PRODUCED = "newswatch_stream_messages_produced_total"
DEAD = "newswatch_stream_dead_lettered_total"
#: How often a stage's /metrics is read while it drains: a scrape renders every series in the
#: stage's event loop (the aggregator's window gauges: 20-40 ms; the classify worker: a few ms),
#: so polls cost the stage CPU. The rate is a least-squares slope over the polls (see Drain).
POLL_S = 1.0
CLASSIFY_POLL_S = 0.5
POSTS_READ = "newswatch_stream_posts_read_total"  # where the aggregator counts posts (a pane holds many)


def has_panes() -> bool:
    """Whether this checkout's aggregator can read pane records (``aggregate.input``, ``topics.panes``)."""
    return "input" in AggregateSettings.model_fields and "panes" in TopicSettings.model_fields


# progress ----------------------------------------------------------------------------------------
class Say:
    """A progress line on stderr: redrawn in place on a terminal, else one line every 10 s."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.3 if self.tty else 10.0):
            return
        self._last = now
        print(
            f"\r\x1b[2K{text}" if self.tty else text,
            end="" if self.tty else "\n",
            file=sys.stderr,
            flush=True,
        )

    def done(self, text: str) -> None:
        """A line that stays."""
        print(f"\r\x1b[2K{text}" if self.tty else text, file=sys.stderr, flush=True)


# the machine and processes -----------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """What the figures were measured on (the load average is the whole machine's)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "note": "shared machine: other work may run beside the benchmark; compare posts per CPU-second",
    }


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU-seconds of process ``pid`` (all its threads); None when unknown or gone."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def runner_process(
    config: Path,
    workdir: Path,
    name: str,
    profile: Path | None = None,
    newswatch: list[str] | None = None,
    metric_stage: str = "classify",
) -> Iterator[StageProcess]:
    """``bench/ceiling_runner.py --config CONFIG``: a classify worker with the zero engine.

    With ``newswatch`` (command-line arguments), the real ``newswatch`` command instead: how a
    stage runs under ``--profile``.
    """
    port = free_port()
    log = workdir / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
    env["NEWSWATCH_METRICS_PORT"] = str(port)
    cmd = [sys.executable, str(RUNNER), "--config", str(config)]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    if newswatch:
        cmd += ["--newswatch", *newswatch]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield StageProcess(metric_stage, proc, port, log)
    finally:
        stop_process(proc, timeout_s=60)


# the backlog -------------------------------------------------------------------------------------
def backlog(records: list[ReplayRecord], n: int, now_ms: int, span_ms: int) -> list[tuple[str, bytes, int]]:
    """``n`` posts ``(id, JSON, event ms)`` in the file's order, evenly over ``span_ms`` up to ``now_ms``.

    >>> recs = [ReplayRecord(b"1", {"id": "1", "text": "a"}, None, 0)]
    >>> [(i, ms) for i, _, ms in backlog(recs, 3, 10_000, 3_000)]
    [('1', 7000), ('1~1', 8000), ('1~2', 9000)]
    """
    usable = [r for r in records if r.obj is not None and r.obj.get("id") is not None]
    if not usable:
        raise SystemExit("no usable records in the replay file")
    out = []
    for i in range(n):
        rec = usable[i % len(usable)]
        cycle = i // len(usable)
        assert rec.obj is not None
        ident = str(rec.obj["id"]) + (f"~{cycle}" if cycle else "")
        at = now_ms - span_ms + (i * span_ms) // n
        when = datetime.fromtimestamp(at / 1000, UTC).isoformat()
        obj = {**rec.obj, "id": ident, "published_at": when}
        out.append((ident, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode(), at))
    return out


# settings ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Names:
    """Topic and group names of one benchmark run (unique: a shared broker may hold others)."""

    prefix: str

    def topics(self, run: str) -> TopicSettings:
        p = self.prefix
        values = {
            "posts": f"{p}.posts",
            "scored": f"{p}.scored.{run}",
            "windows": f"{p}.windows.{run}",
            "alerts": f"{p}.alerts.{run}",
            "dead_letter": f"{p}.dlq.{run}",
            "alerts_dead_letter": f"{p}.adlq.{run}",
        }
        if "panes" in TopicSettings.model_fields:
            values["panes"] = f"{p}.panes.{run}"
        return TopicSettings(**values)


def base_settings(bootstrap: str, partitions: int) -> Settings:
    """This process's settings (``NEWSWATCH_*``, ``NEWSWATCH_CONFIG``) on the benchmark's broker."""
    base = load_settings()
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        partitions=partitions,
        broker_compat="tansu",
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
    )
    return base.model_copy(update={"kafka": kafka})


def write_config(settings: Settings, path: Path) -> Path:
    """The YAML file a stage process reads (its only source: ``NEWSWATCH_*`` is cleared)."""
    sections = {"kafka", "topics", "classify", "aggregate", "alerts", "models"}
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", include=sections)))
    return path


# reading topics ----------------------------------------------------------------------------------
async def read_all(kafka: KafkaSettings, topics: list[str], idle_s: float = 2.0) -> dict[str, list[bytes]]:
    """Every record value of ``topics`` from the beginning, read until none came for ``idle_s``.

    Only after their writer stopped writing (Tansu under-reports end offsets, so a quiet
    topic is the end).
    """
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    out: dict[str, list[bytes]] = {t: [] for t in topics}
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for tp, records in batch.items():
                out[tp.topic].extend(r.value for r in records if r.value is not None)
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return out


@contextlib.asynccontextmanager
async def committed_reader(
    kafka: KafkaSettings, group: str, topic: str
) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """A reader of the offsets ``group`` committed on ``topic``, summed over its partitions.

    A consumer of the group that never subscribes (it does not join; Tansu does not answer
    the admin client's OffsetFetch).
    """
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]

    async def read() -> int:
        return sum([(await consumer.committed(tp)) or 0 for tp in tps])

    try:
        yield read
    finally:
        await consumer.stop()


def dead_ids(values: list[bytes]) -> set[str]:
    """Post ids of dead letters (those whose original bytes still parse)."""
    out = set()
    for v in values:
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            out.add(str(json.loads(DeadLetter.from_json(v).raw)["id"]))
    return out


# draining ----------------------------------------------------------------------------------------
@dataclass
class Drain:
    """Samples ``(time, counter, CPU of the stage, CPU of the broker)`` while a stage drains a backlog.

    The rate is the least-squares slope of the counter over the samples taken while it was
    between 0 and its final value (unbiased by where the first and last poll fall); with
    fewer than 3 such samples, a lower bound: from the last sample without progress to the
    first at the final value. CPU per unit: over the same samples.
    """

    samples: list[tuple[float, float, float | None, float | None]] = field(default_factory=list)

    def _window(self, final: float) -> list[tuple[float, float, float | None, float | None]]:
        inner = [s for s in self.samples if 0 < s[1] < final]
        if len(inner) >= 3:
            return inner
        before = [s for s in self.samples if not s[1] > 0]
        after = [s for s in self.samples if s[1] >= final]
        return before[-1:] + inner + after[:1]

    def rate(self, total: float, final: float) -> float | None:
        """``total`` units per second; the counter reaches ``final`` when they are all done."""
        pts = self._window(final)
        if len(pts) < 2 or final <= 0:
            return None
        n = len(pts)
        mt = sum(p[0] for p in pts) / n
        mc = sum(p[1] for p in pts) / n
        den = sum((p[0] - mt) ** 2 for p in pts)
        slope = sum((p[0] - mt) * (p[1] - mc) for p in pts) / den if den else 0.0
        return total * slope / final if slope > 0 else None

    def per_cpu(self, total: float, final: float) -> float | None:
        """``total`` units per CPU-second of the stage's process."""
        pts = self._window(final)
        if len(pts) < 2 or pts[0][2] is None or pts[-1][2] is None or final <= 0:
            return None
        cpu = pts[-1][2] - pts[0][2]
        return total * (pts[-1][1] - pts[0][1]) / final / cpu if cpu > 0 else None

    def cpu(self, final: float) -> float | None:
        """CPU-seconds of the stage from the last sample without progress to the first at ``final``."""
        return self._span(final, 2)

    def broker_cpu(self, final: float) -> float | None:
        """The broker's CPU-seconds over the same time."""
        return self._span(final, 3)

    def wall(self, final: float) -> float | None:
        """Seconds from the last sample without progress to the first at ``final``."""
        return self._span(final, 0)

    def _span(self, final: float, i: int) -> float | None:
        before = [s for s in self.samples if not s[1] > 0]
        after = [s for s in self.samples if s[1] >= final]
        if not before or not after:
            return None
        a, b = before[-1][i], after[0][i]
        return None if a is None or b is None else float(b) - float(a)


async def drain(
    stage: StageProcess,
    progress: Callable[[], float],
    done: Callable[[float], Awaitable[bool]],
    say: Say,
    what: str,
    broker_pid: int | None,
    timeout_s: float,
    interval_s: float,
) -> Drain:
    """Poll ``progress()`` (a ``/metrics`` counter) until ``await done(value)``; the stage must stay up.

    A scrape of ``/metrics`` costs the stage CPU (the aggregator's window gauges: tens of ms),
    so ``interval_s`` is what the stage can spare.
    """
    d = Drain()
    deadline = time.monotonic() + timeout_s
    while True:
        if stage.proc.poll() is not None:
            raise SystemExit(
                f"{stage.name} exited ({stage.proc.returncode}):\n{stage.log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not drained after {timeout_s:.0f} s:\n{stage.log.read_text()[-3000:]}")
        value = progress()
        d.samples.append(
            (
                time.monotonic(),
                value if value > 0 else 0.0,
                cpu_seconds(stage.proc.pid),
                cpu_seconds(broker_pid),
            )
        )
        if value > 0:
            say(f"{what}: {value:,.0f}")
            if await done(value):
                return d
        await asyncio.sleep(interval_s)


async def wait_ready(stage: StageProcess, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not stage.ready():
        if stage.proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{stage.name} did not start:\n{stage.log.read_text()[-3000:]}")
        await asyncio.sleep(0.2)


class Counted:
    """The aggregator's progress: posts read where it counts them, else records consumed.

    The counter is picked at the first sample with progress and kept.
    """

    def __init__(self, stage: StageProcess) -> None:
        self.stage = stage
        self.name: str | None = None

    def __call__(self) -> float:
        if self.name is not None:
            return self.stage.metric(self.name)
        for name in (POSTS_READ, CONSUMED):
            value = self.stage.metric(name)
            if value == value and value > 0:
                self.name = name
                return value
        return 0.0


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


# the benchmark -----------------------------------------------------------------------------------
@dataclass
class Ceiling:
    args: argparse.Namespace
    base: Settings
    names: Names
    workdir: Path
    broker_pid: int | None
    say: Say = field(default_factory=Say)
    posts: list[tuple[str, bytes, int]] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def kafka(self) -> KafkaSettings:
        return self.base.kafka

    def settings(self, run: str, **sections: dict[str, Any]) -> Settings:
        update: dict[str, Any] = {"topics": self.names.topics(run)}
        for name, values in sections.items():
            update[name] = getattr(self.base, name).model_copy(update=values)
        return self.base.model_copy(update=update)

    async def load(self) -> dict[str, Any]:
        """Publish the backlog of posts."""
        records, duplicates = load_records(self.args.file, limit=self.args.posts)
        now_ms = int(time.time() * 1000)
        span_ms = int(self.args.posts / self.args.event_rate * 1000)
        self.posts = backlog(records, self.args.posts, now_ms, span_ms)
        tally = Counter(e for r in records if r.obj for e in (r.obj.get("entities") or ()))
        self.entities = [e for e, _ in tally.most_common(self.args.alert_entities)]
        self.texts = [str(r.obj.get("text") or "") for r in records[:1_000] if r.obj]
        topic = self.names.topics("load").posts
        await create_topics(self.kafka, [topic])
        producer = make_producer(self.kafka, linger_ms=20)
        await producer.start()
        t0 = time.monotonic()
        try:
            chunk = 5_000
            for i in range(0, len(self.posts), chunk):
                part = self.posts[i : i + chunk]
                await publish(producer, topic, [(ident.encode(), raw, now_ms) for ident, raw, _ in part])
                self.say(f"backlog: published {i + len(part):,}/{len(self.posts):,}")
        finally:
            await producer.stop()
        wall = time.monotonic() - t0
        self.say.done(f"backlog: {len(self.posts):,} posts published in {wall:.1f} s")
        return {
            "posts": len(self.posts),
            "distinct_tweets": min(len(records), len(self.posts)),
            "duplicates_dropped": duplicates,
            "event_time_span_s": round(span_ms / 1000, 1),
            "publish_s": round(wall, 1),
        }

    async def classify(self, batch_size: int, profile: Path | None = None) -> dict[str, Any]:
        """One classify worker process draining the backlog; every post must come back."""
        run = f"c{batch_size}" + ("p" if profile else "")
        settings = self.settings(
            run, classify={"group_id": f"{self.names.prefix}-{run}", "batch_size": batch_size}
        )
        topics = settings.topics
        panes = getattr(topics, "panes", None)  # the classify worker writes panes where it can
        outputs = [t for t in (topics.scored, topics.dead_letter, panes) if t]
        await create_topics(self.kafka, outputs)
        config = write_config(settings, self.workdir / f"{run}.yaml")
        n = len(self.posts)
        with runner_process(config, self.workdir, f"classify-{run}", profile) as stage:

            def progress() -> float:
                return stage.metric(PRODUCED) + stage.metric(DEAD)

            async def done(value: float) -> bool:
                return value >= n

            what = f"classify b={batch_size}"
            d = await drain(stage, progress, done, self.say, what, self.broker_pid, 600, CLASSIFY_POLL_S)
            dlq_reasons = _by_reason(stage.port)
        read = await read_all(self.kafka, outputs)
        scored = [ScoredPost.from_json(v) for v in read[topics.scored]]
        ids = {s.post.id for s in scored}
        dead = dead_ids(read[topics.dead_letter])
        lost = len({i for i, _, _ in self.posts} - ids - dead)
        stamps = sorted(s.scored_ms for s in scored)
        first_batch = sum(1 for s in stamps if s == stamps[0]) if stamps else 0
        span_s = (stamps[-1] - stamps[0]) / 1000 if stamps else 0.0
        rate = (len(scored) - first_batch) / span_s if span_s > 0 else None
        cpu = d.cpu(n)
        self.say.done(
            f"classify b={batch_size}: {len(scored):,} scored, {len(dead)} dead-lettered, {lost} lost, "
            f"{rate or 0:,.0f} posts/s"
        )
        return {
            "batch_size": batch_size,
            "posts": n,
            "scored": len(ids),
            "scored_records": len(scored),
            "dead_lettered": len(dead),
            "dead_letter_reasons": dlq_reasons,
            "pane_records": len(read[panes]) if panes else None,
            "lost": lost,
            "posts_per_s": _r(rate),
            "drain_posts_per_s": _r(d.rate(n, n)),
            "drain_s": _r(d.wall(n), 2),
            "first_to_last_scored_s": round(span_s, 3),
            "cpu_s": _r(cpu, 2),
            "posts_per_cpu_s": _r(d.per_cpu(n, n)),
            "broker_cpu_s": _r(d.broker_cpu(n), 2),
            "meets_target": bool(rate is not None and rate >= TARGET_POSTS_PER_S),
        }

    async def aggregate(self, mode: str, source_run: str, profile: Path | None = None) -> dict[str, Any]:
        """``newswatch aggregate`` draining the scored posts (or the panes) of ``source_run``."""
        run = f"agg-{mode}" + ("-profiled" if profile else "")
        src = self.names.topics(source_run)
        input_topic = src.scored if mode == "scored" else getattr(src, "panes")  # noqa: B009
        topics = self.names.topics(run).model_copy(update={"scored": src.scored})
        if "panes" in TopicSettings.model_fields:
            topics = topics.model_copy(update={"panes": getattr(src, "panes")})  # noqa: B009
        agg: dict[str, Any] = {
            "app_id": f"{self.names.prefix}-{run}",
            "data_dir": str(self.workdir / f"faust-{run}"),
        }
        if has_panes():
            agg["input"] = mode
        settings = self.settings(run, aggregate=agg).model_copy(update={"topics": topics})
        await create_topics(self.kafka, [topics.windows, topics.dead_letter])
        records = len((await read_all(self.kafka, [input_topic], idle_s=1.0))[input_topic])
        if not records:
            raise SystemExit(f"aggregate ({mode}): {input_topic} is empty")
        n = len(self.posts)
        config = write_config(settings, self.workdir / f"{run}.yaml")
        name = f"aggregate-{mode}"
        async with committed_reader(self.kafka, agg["app_id"], input_topic) as read_committed:
            if profile is None:
                process = stage_process(name, ["aggregate"], config, self.workdir, "aggregate")
            else:
                process = runner_process(config, self.workdir, name, profile, ["aggregate"], "aggregate")
            with process as stage:
                committed = 0

                async def done(value: float) -> bool:
                    nonlocal committed
                    committed = await read_committed()
                    return committed >= records

                progress = Counted(stage)
                d = await drain(
                    stage, progress, done, self.say, name, self.broker_pid, 900, interval_s=POLL_S
                )
                final_consumed = progress()
                # windows still being emitted: wait until the output stops growing, then stop it
                produced, since = stage.metric(PRODUCED), time.monotonic()
                while time.monotonic() - since < 2.0:
                    await asyncio.sleep(0.25)
                    now = stage.metric(PRODUCED)
                    if now != produced:
                        produced, since = now, time.monotonic()
                late = stage.metric("newswatch_stream_late_events_total")
                dups = stage.metric("newswatch_stream_duplicates_total")
                agg_dead = stage.metric(DEAD)
        windows = (await read_all(self.kafka, [topics.windows]))[topics.windows]
        latest: dict[tuple[str, str, str, int], tuple[int, bool]] = {}  # the last record is authoritative
        for v in windows:
            w = WindowStat.from_json(v)
            latest[(w.kind, w.key, w.window, w.start_ms)] = (w.count, w.final)
        # posts: the backlog's, over the share of the consumed counter (records or posts) in the interval
        rate = d.rate(n, final_consumed)
        cpu = d.cpu(final_consumed)
        self.say.done(
            f"aggregate ({mode}): {records:,} records, {rate or 0:,.0f} posts/s, {len(windows):,} windows"
        )
        return {
            "input": mode,
            "input_topic_records": records,
            "posts": n,
            "counted_by": progress.name,
            "counted": final_consumed,
            "committed": committed,
            "posts_per_s": _r(rate),
            "drain_s": _r(d.wall(final_consumed), 2),
            "cpu_s": _r(cpu, 2),
            "posts_per_cpu_s": _r(d.per_cpu(n, final_consumed)),
            "broker_cpu_s": _r(d.broker_cpu(final_consumed), 2),
            "samples": len(d.samples),
            "late": late,
            "duplicates": dups,
            "dead_lettered": agg_dead,
            "window_records": len(windows),
            "produced": produced,
            "windows": len(latest),
            "final_windows": sum(1 for _, final in latest.values() if final),
            "meets_target": bool(rate is not None and rate >= TARGET_POSTS_PER_S),
            "_latest": latest,
        }

    async def alerts(self) -> dict[str, Any]:
        """``newswatch alerts run`` draining ``--alert-minutes`` of window records of the backlog's keys."""
        run = "alerts"
        topics = self.names.topics(run)
        settings = self.settings(run, alerts={"group_id": f"{self.names.prefix}-{run}"})
        await create_topics(self.kafka, [topics.windows, topics.alerts, topics.dead_letter])
        windows_topic = topics.windows
        stats = alert_windows(
            settings.alerts.windows,
            self.entities,
            self.texts,
            self.args.alert_minutes,
            int(time.time() * 1000) // 60_000 * 60_000,
        )
        producer = make_producer(self.kafka, linger_ms=20)
        await producer.start()
        try:
            records = [(f"{w.kind}:{w.key}:{w.window}".encode(), w.to_json(), w.end_ms) for w in stats]
            await publish(producer, windows_topic, records)
        finally:
            await producer.stop()
        values = [v for _, v, _ in records]
        total = len(values)
        if not total:
            raise SystemExit(f"alerts run: {windows_topic} is empty ")
        watched = set(settings.alerts.windows)
        watched_records = sum(1 for v in values if WindowStat.from_json(v).window in watched)
        config = write_config(settings, self.workdir / f"{run}.yaml")
        with stage_process("alerts", ["alerts", "run"], config, self.workdir, "detect") as stage:

            async def done(value: float) -> bool:
                return value >= total

            consumed = lambda: stage.metric(CONSUMED)  # noqa: E731
            d = await drain(stage, consumed, done, self.say, "alerts run", self.broker_pid, 900, POLL_S)
            alert_events = stage.metric(PRODUCED)
            dead = stage.metric(DEAD)
        rate = d.rate(total, total)
        cpu = d.cpu(total)
        self.say.done(f"alerts run: {total:,} window records, {rate or 0:,.0f} windows/s")
        return {
            "window_records": total,
            "final_records": sum(1 for w in stats if w.final),
            "keys": len({(w.kind, w.key) for w in stats}),
            "minutes": self.args.alert_minutes,
            "watched_window_records": watched_records,
            "watched_windows": sorted(watched),
            "windows_per_s": _r(rate),
            "drain_s": _r(d.wall(total), 2),
            "cpu_s": _r(cpu, 2),
            "windows_per_cpu_s": _r(d.per_cpu(total, total)),
            "broker_cpu_s": _r(d.broker_cpu(total), 2),
            "samples": len(d.samples),
            "alert_events": alert_events,
            "dead_lettered": dead,
        }


def alert_windows(
    names: tuple[str, ...] | list[str], entities: list[str], texts: list[str], minutes: int, end_ms: int
) -> list[WindowStat]:
    """Window records as the aggregator writes them for ``minutes`` of a steady stream, ending at ``end_ms``.

    For each window shape the detectors watch (``names``), each key (the 20 topics, the
    backlog's entities, its source, global) and each step: one in-progress update and the
    final record, in time order. Counts and sentiment are noisy around a level per key, with
    rare bursts (5x the posts, mostly negative) so that detectors score, fire and resolve.
    Seeded: the same arguments give the same records.

    >>> ws = alert_windows(["tumbling_60000"], ["$A"], ["t"], 2, 120_000)
    >>> len(ws), sorted({w.kind for w in ws}), ws[-1].final, ws[-1].end_ms
    (92, ['entity', 'global', 'source', 'topic'], True, 120000)
    """
    rng = random.Random(17)
    keys = [("topic", t) for t in ZERO_TOPICS] + [("entity", e) for e in entities]
    keys += [("source", "stocknet"), ("global", "all")]
    level = {k: (200.0 if k[0] in ("source", "global") else rng.uniform(3, 60)) for k in keys}
    out: list[WindowStat] = []
    for name in names:
        parts = name.split("_")
        duration = int(parts[1])
        step = int(parts[2]) if len(parts) > 2 else duration
        steps = max(1, minutes * 60_000 // step)
        for i in range(steps):
            start = end_ms - duration - (steps - 1 - i) * step
            for kind, key in keys:
                burst = rng.random() < 0.002
                count = max(
                    1, int(rng.gauss(level[(kind, key)], level[(kind, key)] ** 0.5) * (5 if burst else 1))
                )
                neg = min(1.0, max(0.0, rng.gauss(0.7 if burst else 0.25, 0.05)))
                mean = min(1.0, max(-1.0, rng.gauss(-0.5 if burst else 0.05, 0.1)))
                examples = tuple(
                    {
                        "id": f"ex-{i}-{j}",
                        "text": texts[(i + j) % len(texts)][:280] if texts else "",
                        "url": None,
                        "score": round(-0.9 + 0.1 * j, 3),
                        "entities": [key] if kind == "entity" else [],
                    }
                    for j in range(3)
                )
                for final, n in ((False, max(1, count // 2)), (True, count)):
                    out.append(
                        WindowStat(
                            kind=kind,  # type: ignore[arg-type]
                            key=key,
                            window=name,
                            start_ms=start,
                            end_ms=start + duration,
                            count=n,
                            mean_score=mean,
                            negative_share=neg,
                            examples=examples,
                            final=final,
                        )
                    )
    return out


def _by_reason(port: int) -> dict[str, float]:
    from newswatch.demo.stages import counter_by

    return counter_by(port, DEAD, "reason")


def profile_total(path: Path, posts: int) -> float:
    """All the CPU time in a cProfile dump (start-up and waiting included), in µs per post."""
    stats = pstats.Stats(str(path))
    return round(stats.total_tt / posts * 1e6, 1)  # type: ignore[attr-defined]


def profile_top(path: Path, posts: int, top: int = 15) -> list[dict[str, Any]]:
    """The functions with the most own time in a cProfile dump, in µs per post."""
    stats = pstats.Stats(str(path))
    rows = []
    for (file, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = "/".join(Path(file).parts[-2:]) if file != "~" else "~"
        rows.append(
            {
                "function": f"{short}:{line}({name})",
                "calls": nc,
                "own_us_per_post": round(tt / posts * 1e6, 2),
                "cum_us_per_post": round(ct / posts * 1e6, 2),
            }
        )
    rows.sort(key=lambda r: -float(r["own_us_per_post"]))
    return rows[:top]


@contextlib.asynccontextmanager
async def broker_for(args: argparse.Namespace) -> AsyncIterator[tuple[str, int | None]]:
    """``--bootstrap`` (a running broker), else an embedded one for this run: (bootstrap, its pid)."""
    if args.bootstrap:
        yield args.bootstrap, None
        return
    with (
        tempfile.TemporaryDirectory(prefix="newswatch-ceiling-broker-") as tmp,
        EmbeddedBroker(log_file=Path(tmp) / "tansu.log") as broker,
    ):
        proc = getattr(broker, "_proc", None)  # its CPU time beside the stage's
        yield broker.bootstrap_servers, (proc.pid if proc is not None else None)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Load the backlog, then drain it with each stage in turn; the JSON result."""
    t0 = time.monotonic()
    before = machine()
    async with broker_for(args) as (bootstrap, broker_pid):
        with tempfile.TemporaryDirectory(prefix="newswatch-ceiling-") as tmp:
            base = base_settings(bootstrap, args.partitions)
            bench = Ceiling(args, base, Names(f"ceiling-{uuid.uuid4().hex[:6]}"), Path(tmp), broker_pid)
            loaded = await bench.load()
            sizes = list(dict.fromkeys([base.classify.batch_size, args.max_batch]))
            classify = {f"batch_{b}": await bench.classify(b) for b in sizes}
            source = f"c{sizes[0]}"
            aggregate: dict[str, Any] = {"scored": await bench.aggregate("scored", source)}
            panes_written = classify[f"batch_{sizes[0]}"]["pane_records"]
            if has_panes() and panes_written:
                aggregate["panes"] = await bench.aggregate("panes", source)
            elif has_panes():
                aggregate["panes"] = None
                aggregate["panes_note"] = "the classify worker wrote no pane records: scored path only"
            else:
                aggregate["panes"] = None
                aggregate["panes_note"] = (
                    "this checkout's aggregator has no aggregate.input: scored path only"
                )
            alerts = await bench.alerts()
            profile: dict[str, Any] | None = None
            if args.profile is not None:
                profiled = await bench.classify(sizes[0], profile=args.profile)
                mode = "panes" if aggregate["panes"] else "scored"
                agg_prof = args.profile.with_name(f"{args.profile.stem}-aggregate-{mode}.prof")
                agg_profiled = await bench.aggregate(mode, source, profile=agg_prof)
                profile = {
                    "timer": "CPU time of the process (time.process_time)",
                    "classify": {
                        "file": str(args.profile),
                        "batch_size": sizes[0],
                        "posts_per_s_under_cprofile": profiled["posts_per_s"],
                        "cpu_us_per_post": profile_total(args.profile, len(bench.posts)),
                        "top_own_time": profile_top(args.profile, len(bench.posts)),
                    },
                    "aggregate": {
                        "file": str(agg_prof),
                        "input": mode,
                        "posts_per_s_under_cprofile": agg_profiled["posts_per_s"],
                        "cpu_us_per_post": profile_total(agg_prof, len(bench.posts)),
                        "top_own_time": profile_top(agg_prof, len(bench.posts)),
                    },
                }
                agg_profiled.pop("_latest")
    scored_latest = aggregate["scored"].pop("_latest")
    if aggregate.get("panes"):
        panes_latest = aggregate["panes"].pop("_latest")
        # every window's last record (counts, final or not) as the scored path wrote it
        aggregate["panes"]["windows_equal_scored"] = panes_latest == scored_latest
        s, p = aggregate["scored"]["posts_per_s"], aggregate["panes"]["posts_per_s"]
        aggregate["panes_over_scored"] = round(p / s, 2) if s and p else None
    best_classify = max((c["posts_per_s"] or 0 for c in classify.values()), default=0)
    best_aggregate = max(
        (a["posts_per_s"] or 0 for a in (aggregate["scored"], aggregate.get("panes")) if a), default=0
    )
    return {
        "benchmark": "ceiling",
        "machine": before,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "engine": "zero (bench/zero_engine.py: fixed predictions, no model)",
        "partitions": args.partitions,
        "backlog": loaded,
        "classify": classify,
        "aggregate": aggregate,
        "alerts": alerts,
        "targets": {"classify_posts_per_s": TARGET_POSTS_PER_S, "aggregate_posts_per_s": TARGET_POSTS_PER_S},
        "meets_target": {
            "classify": best_classify >= TARGET_POSTS_PER_S,
            "aggregate": best_aggregate >= TARGET_POSTS_PER_S,
        },
        "lost": sum(c["lost"] for c in classify.values()),
        "profile": profile,
        "wall_s": round(time.monotonic() - t0, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--posts", type=int, default=60_000, help="Posts in the backlog (default 60,000).")
    p.add_argument("--quick", action="store_true", help="3,000 posts: a check that it runs.")
    p.add_argument("--max-batch", type=int, default=1024, help="The second classify run's batch size.")
    p.add_argument(
        "--event-rate",
        type=float,
        default=TARGET_POSTS_PER_S,
        help="Posts per second of event time in the backlog (default: the target, as a live stream "
        "at that rate would be).",
    )
    p.add_argument(
        "--alert-minutes", type=int, default=240, help="Minutes of window records the alerts run drains."
    )
    p.add_argument(
        "--alert-entities", type=int, default=100, help="Entity keys (the backlog's most frequent) in them."
    )
    p.add_argument("--partitions", type=int, default=2, help="Partitions per topic.")
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="Replay file (CSV/JSONL).")
    p.add_argument("--bootstrap", help="Use this running broker (Tansu) instead of an embedded one.")
    p.add_argument(
        "--profile",
        type=Path,
        help="Also run classify (stats here) and the aggregator (beside it) under cProfile.",
    )
    p.add_argument("--json", action="store_true", help="Print one JSON line (else indented JSON).")
    args = p.parse_args(argv)
    if args.quick:
        args.posts = min(args.posts, 3_000)
        args.alert_minutes = min(args.alert_minutes, 10)
    return args


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up the stages on SIGTERM too
    arguments = parse_args()
    try:
        out = asyncio.run(main(arguments))
    except KeyboardInterrupt:
        print("\nceiling: interrupted; stages and broker stopped", file=sys.stderr)
        sys.exit(130)
    print(json.dumps(out) if arguments.json else json.dumps(out, indent=2))
