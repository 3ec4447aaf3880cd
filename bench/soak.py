"""Load and soak benchmark of the whole pipeline: real tweets → classify → aggregate, on the embedded broker.

Posts are the StockNet tweets (``../shared/data/stocknet_tweets/stocknet_tweets_2014_2016.csv``,
deduplicated on tweet_id by :func:`newswatch.demo.replay.load_records`), re-timed to the
send time so the aggregator's event-time windows advance live. The classify stage
(``newswatch classify``) and the aggregator (``newswatch aggregate``) run as their own
processes, exactly as deployed; this process publishes and reads the scored topic.

Phases:

0. **engine**: the bare engine alone in this process, before the stages start: the shipped
   model (``models.*``) scoring the same tweets in batches of ``classify.batch_size`` for
   ``--engine-s``: texts/s, which sizes the capacity run's backlogs.
1. **capacity**: ``--capacity-cycles`` cycles of the bare engine alone, then the whole stack
   draining a backlog of ``--capacity-factor`` × the engine's rate (the benchmark idle), each
   slice ``--capacity-s`` / cycles long, and a last engine slice (:meth:`Bench.capacity`;
   ``--capacity-from live`` is the earlier method). ``stack_over_engine`` = the stack's
   scored rate / the engine's over the interleaved slices; the CPU each process used in the
   stack's windows is reported too.
2. **ramp**: publish at doubling rates (``--start-rate``, 2x, 4x …) for ``--step-s`` each, then
   bisect between the last sustained and the first failed rate. A rate is *sustained* when
   every post of the step is scored within ``--catchup-s`` after the step ends and the
   step's p99 publish→scored latency is below ``--max-p99-s``.
3. **latency**: ``--latency-s`` at 50 % and at 90 % of the max sustained rate: p50/p99
   publish→scored latency (publish = Kafka timestamp of the input record, scored = when this
   process reads the scored record).
4. **soak**: ``--duration-s`` (default 600) at 50 % of the max rate; RSS of the classify and
   aggregate processes sampled every ``--sample-s``; the slope (MB/min, least squares over
   the run after its first fifth) shows a growth trend.

At the end every published id must be scored or dead-lettered (``lost``), and the
aggregator must have consumed every scored record. The aggregator's windows come from the
``NEWSWATCH_AGGREGATE_*`` settings. Prints JSON; a progress line on stderr::

    python bench/soak.py --duration-s 600 --json
    python bench/soak.py --duration-s 60 --step-s 10 --latency-s 15      # a short run
    python bench/soak.py --rate 25 --duration-s 600                      # soak only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from newswatch.demo.broker import EmbeddedBroker
from newswatch.demo.replay import ReplayRecord, load_records
from newswatch.demo.stages import StageProcess, cpu_s, rss_mb, stage_process
from newswatch.io.kafka import create_topics, make_producer
from newswatch.io.schemas import DeadLetter, ScoredPost
from newswatch.settings import KafkaSettings, Settings, TopicSettings, load_settings

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "stocknet_tweets"
DEFAULT_FILE = DATA / "stocknet_tweets_2014_2016.csv"


# posts -------------------------------------------------------------------------------------------
class Posts:
    """Endless valid posts from the replay file: ids get a ``~cycle`` suffix once the file is used up."""

    def __init__(self, records: list[ReplayRecord]) -> None:
        self.records = [r for r in records if r.obj is not None and r.obj.get("id") is not None]
        if not self.records:
            raise SystemExit("no usable records in the replay file")
        self.n = 0

    def next(self, now: datetime) -> tuple[str, bytes]:
        rec = self.records[self.n % len(self.records)]
        cycle = self.n // len(self.records)
        self.n += 1
        assert rec.obj is not None
        ident = str(rec.obj["id"]) + (f"~{cycle}" if cycle else "")
        obj = {**rec.obj, "id": ident, "published_at": now.isoformat()}
        return ident, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


# the reader of the output topics ----------------------------------------------------------------
@dataclass
class Reader:
    """Reads the scored and dead-letter topics; latency per scored record, per phase."""

    kafka: KafkaSettings
    topics: TopicSettings
    scored_ids: set[str] = field(default_factory=set)
    dead_ids: set[str] = field(default_factory=set)
    scored_records: int = 0
    latency_s: dict[str, list[float]] = field(default_factory=dict)
    phase_of: dict[str, str] = field(default_factory=dict)
    _reading: asyncio.Event = field(default_factory=asyncio.Event)

    def pause(self) -> None:
        """Stop reading (keeps this process off the CPU while a capacity window is measured)."""
        self._reading.clear()

    def resume(self) -> None:
        """Read again, from where the reader stopped."""
        self._reading.set()

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [
                TopicPartition(t, p)
                for t in (self.topics.scored, self.topics.dead_letter)
                for p in range(self.kafka.partitions)
            ]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._reading.set()
            while not stop.is_set():
                await self._reading.wait()
                batch = await consumer.getmany(timeout_ms=100)
                now = time.time()
                for tp, records in batch.items():
                    for r in records:
                        if r.value is None:
                            continue
                        if tp.topic == self.topics.scored:
                            self._scored(ScoredPost.from_json(r.value), now)
                        else:
                            self._dead(DeadLetter.from_json(r.value))
        finally:
            await consumer.stop()

    def _scored(self, sp: ScoredPost, now: float) -> None:
        self.scored_records += 1
        if sp.post.id in self.scored_ids:
            return
        self.scored_ids.add(sp.post.id)
        phase = self.phase_of.get(sp.post.id)
        if phase is not None:
            self.latency_s.setdefault(phase, []).append(max(0.0, now - sp.record_ms / 1000))

    def _dead(self, letter: DeadLetter) -> None:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            self.dead_ids.add(str(json.loads(letter.raw)["id"]))

    def done(self, ids: list[str]) -> bool:
        return all(i in self.scored_ids or i in self.dead_ids for i in ids)


# processes ---------------------------------------------------------------------------------------
def _settings(bootstrap: str, workdir: Path) -> Settings:
    base = load_settings()
    return base.model_copy(
        update={
            "kafka": KafkaSettings(
                bootstrap_servers=bootstrap,
                partitions=2,
                broker_compat="tansu",
                session_timeout_ms=6_000,
                heartbeat_interval_ms=1_000,
            ),
            "topics": TopicSettings(),
            "aggregate": base.aggregate.model_copy(update={"data_dir": str(workdir / "faust")}),
        }
    )


# the benchmark -----------------------------------------------------------------------------------
@dataclass
class Bench:
    args: argparse.Namespace
    settings: Settings
    reader: Reader
    posts: Posts
    published: list[str] = field(default_factory=list)
    _said: float = 0.0

    def say(self, text: str) -> None:
        """A progress line on stderr: redrawn in place on a terminal, else one line every 10 s."""
        now = time.monotonic()
        tty = sys.stderr.isatty()
        if now - self._said < (0.5 if tty else 10.0):
            return
        self._said = now
        print(f"\r\x1b[2K{text}" if tty else text, end="" if tty else "\n", file=sys.stderr, flush=True)

    async def _send(
        self, producer: AIOKafkaProducer, phase: str, ids: list[str], futures: list[asyncio.Future[Any]]
    ) -> None:
        """Send the next post of ``phase``; its id goes to ``ids``, acknowledgements are
        awaited 2,000 at a time."""
        now = datetime.now(UTC)
        ident, raw = self.posts.next(now)
        self.reader.phase_of[ident] = phase
        stamp = int(now.timestamp() * 1000)
        futures.append(
            await producer.send(self.settings.topics.posts, raw, key=ident.encode(), timestamp_ms=stamp)
        )
        ids.append(ident)
        if len(futures) >= 2_000:
            await asyncio.gather(*futures)
            futures.clear()

    async def publish(self, phase: str, rate: float, seconds: float) -> list[str]:
        """Publish at ``rate`` posts/s for ``seconds``; returns the ids sent (all acknowledged)."""
        producer = make_producer(self.settings.kafka, linger_ms=5)
        await producer.start()
        ids: list[str] = []
        futures: list[asyncio.Future[Any]] = []
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < seconds:
                due = int(elapsed * rate) + 1
                while len(ids) < due:
                    await self._send(producer, phase, ids, futures)
                scored = sum(1 for i in ids[-200:] if i in self.reader.scored_ids)
                self.say(
                    f"{phase}: {rate:.0f}/s {elapsed:5.1f}/{seconds:.0f} s, "
                    f"sent {len(ids)}, scored {scored}/200"
                )
                await asyncio.sleep(0.01)  # pacing, not synchronisation
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        self.published += ids
        return ids

    async def publish_backlog(self, phase: str, count: int) -> list[str]:
        """Publish ``count`` posts as fast as the producer takes them; returns the ids (all acknowledged)."""
        producer = make_producer(self.settings.kafka, linger_ms=5)
        await producer.start()
        ids: list[str] = []
        futures: list[asyncio.Future[Any]] = []
        try:
            while len(ids) < count:
                await self._send(producer, phase, ids, futures)
                if len(ids) % 2_000 == 0:
                    self.say(f"{phase}: backlog {len(ids)}/{count} published")
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        self.published += ids
        return ids

    async def wait_done(self, ids: list[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.reader.done(ids):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def step(self, phase: str, rate: float, seconds: float) -> dict[str, Any]:
        ids = await self.publish(phase, rate, seconds)
        caught_up = await self.wait_done(ids, self.args.catchup_s)
        lat = self.reader.latency_s.get(phase, [])
        result = {
            "rate_per_s": round(rate, 1),
            "sent": len(ids),
            "scored_in_time": sum(1 for i in ids if i in self.reader.scored_ids),
            **_percentiles(lat),
        }
        result["sustained"] = bool(caught_up and lat and result["p99_s"] <= self.args.max_p99_s)
        if not caught_up:  # drain before the next step so steps do not overlap
            await self.wait_done(ids, 300)
        return result

    async def capacity(
        self,
        rate: float,
        seconds: float,
        stages: list[StageProcess],
        pids: dict[str, int],
        bare: BareEngine,
    ) -> dict[str, Any]:
        """The scored rate the stack sustains with more work waiting than it can take, against
        the bare engine measured in between.

        By default (``--capacity-from backlog``) the stages first drain 5 s worth of backlog
        (a warm-up on full batches, as the engine had), then the phase runs ``--capacity-cycles`` cycles:
        the bare engine alone for ``seconds / cycles`` (the stages idle), then a backlog of
        ``rate × seconds / cycles`` posts is published and, after a second for the stages to
        get going, the stack is measured draining it for ``seconds / cycles`` while this
        process stays off the CPU (its reader paused; the rate is the classify stage's own
        produced counter), then the backlog is drained; a last engine slice closes the run.
        Interleaved slices see the same machine: on a shared VM whose speed drifts by 10 % or
        more within minutes, an engine run before the stack and one after it did not. The
        stack's processes share the machine only with each other, as in a deployment whose
        producers and consumers run elsewhere.

        ``--capacity-from live`` is the method before 2026-12-07: posts published at ``rate``
        during one window of ``seconds`` (the last 70 % measured), the benchmark's publishing
        and reading taking their share of the cores, against the engine measured before the
        stages started.

        Each process's CPU (broker, stages, this benchmark) in the measured windows shows where
        the machine's cores went.
        """
        if self.args.capacity_from == "live":
            return await self._capacity_live(rate, seconds, stages, pids)
        classify, cycles = stages[0], max(1, self.args.capacity_cycles)
        slice_s = seconds / cycles
        engine_runs: list[dict[str, float]] = []
        windows: list[tuple[float, float, dict[str, float]]] = []  # seconds, posts, CPU seconds
        sent: list[str] = []

        def snapshot() -> tuple[float, float, dict[str, float]]:
            produced = classify.metric("newswatch_stream_messages_produced_total")
            return time.monotonic(), produced, {name: cpu_s(pid) for name, pid in pids.items()}

        # The engine was warmed up on full batches; the stages so far only on the warm-up step's
        # trickle, so they first drain a few seconds' backlog unmeasured too.
        warm = await self.publish_backlog("capacity warm-up", int(rate * 5))
        sent += warm
        if not await self.wait_done(warm, 300):
            raise SystemExit("capacity warm-up: the backlog was not drained in 300 s")
        for cycle in range(cycles):
            engine_runs.append(bare.run(slice_s))
            ids = await self.publish_backlog(f"capacity {cycle + 1}/{cycles}", int(rate * slice_s))
            sent += ids
            self.reader.pause()
            try:
                await asyncio.sleep(1.0)  # pacing: the stages pick the backlog up
                t0, n0, c0 = snapshot()
                await asyncio.sleep(slice_s)  # the measured window
                t1, n1, c1 = snapshot()
            finally:
                self.reader.resume()
            windows.append((t1 - t0, n1 - n0, {n: c1[n] - c0[n] for n in pids}))
            self.say(f"capacity {cycle + 1}/{cycles}: {(n1 - n0) / (t1 - t0):.0f} posts/s")
            if not await self.wait_done(ids, 300):  # drained: the next engine slice runs alone
                raise SystemExit(f"capacity cycle {cycle + 1}: the backlog was not drained in 300 s")
        engine_runs.append(bare.run(slice_s))
        span = sum(w[0] for w in windows)
        engine_rate = sum(r["texts"] for r in engine_runs) / sum(r["seconds"] for r in engine_runs)
        stack_rate = sum(w[1] for w in windows) / span
        return {
            "from": "backlog",
            "cycles": cycles,
            "seconds": round(span, 1),
            "sent": len(sent),
            "engine_texts_per_s": round(engine_rate, 1),
            "stack_posts_per_s": round(stack_rate, 1),
            "engine_slices_per_s": [round(r["texts"] / r["seconds"], 1) for r in engine_runs],
            "stack_windows_per_s": [round(w[1] / w[0], 1) for w in windows],
            "engine_cpu_cores": round(
                sum(r["cpu_s"] for r in engine_runs) / sum(r["seconds"] for r in engine_runs), 3
            ),
            "cpu_cores": {n: round(sum(w[2][n] for w in windows) / span, 3) for n in pids},
            "aggregated_at_end": stages[1].metric("newswatch_stream_messages_consumed_total"),
        }

    async def _capacity_live(
        self, rate: float, seconds: float, stages: list[StageProcess], pids: dict[str, int]
    ) -> dict[str, Any]:
        marks: list[tuple[float, int, dict[str, float]]] = []
        stop = asyncio.Event()

        async def mark() -> None:
            while not stop.is_set():
                cpu = {name: cpu_s(pid) for name, pid in pids.items()}
                marks.append((time.monotonic(), self.reader.scored_records, cpu))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

        marker = asyncio.create_task(mark())
        started = time.monotonic()
        try:
            ids = await self.publish("capacity", rate, seconds)
        finally:
            stop.set()
            await marker
        window = [m for m in marks if m[0] - started >= 0.3 * seconds]
        span = window[-1][0] - window[0][0] if len(window) > 2 else 0.0
        carried = (window[-1][1] - window[0][1]) / span if span else 0.0
        scored_at_end = self.reader.scored_records
        aggregated_at_end = stages[1].metric("newswatch_stream_messages_consumed_total")
        await self.wait_done(ids, 300)  # drain before the next phase
        return {
            "from": "live",
            "offered_per_s": round(rate, 1),
            "seconds": seconds,
            "sent": len(ids),
            "stack_posts_per_s": round(carried, 1),
            "cpu_cores": {n: round((window[-1][2][n] - window[0][2][n]) / span, 3) for n in pids}
            if span
            else {},
            "scored_at_end": scored_at_end,
            "aggregated_at_end": aggregated_at_end,
        }

    async def ramp(self) -> tuple[float, list[dict[str, Any]]]:
        steps: list[dict[str, Any]] = []
        good, bad = 0.0, None
        rate = self.args.start_rate
        while rate <= self.args.max_rate:
            res = await self.step(f"ramp@{rate:.0f}", rate, self.args.step_s)
            steps.append(res)
            if not res["sustained"]:
                bad = rate
                break
            good = rate
            rate *= 2
        for _ in range(self.args.bisect):
            if bad is None or bad - good < max(5.0, 0.1 * good):
                break
            mid = (good + bad) / 2
            res = await self.step(f"ramp@{mid:.0f}", mid, self.args.step_s)
            steps.append(res)
            if res["sustained"]:
                good = mid
            else:
                bad = mid
        return good, steps

    async def soak(self, rate: float, stages: list[StageProcess]) -> dict[str, Any]:
        samples: list[tuple[float, dict[str, float]]] = []
        stop = asyncio.Event()

        async def sample() -> None:
            t0 = time.monotonic()
            while not stop.is_set():
                samples.append((time.monotonic() - t0, {s.name: rss_mb(s.proc.pid) for s in stages}))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.args.sample_s)

        sampler = asyncio.create_task(sample())
        try:
            ids = await self.publish("soak", rate, self.args.duration_s)
        finally:
            stop.set()
            await sampler
        await self.wait_done(ids, self.args.catchup_s + 60)
        rss: dict[str, Any] = {}
        for s in stages:
            series = [(t, v[s.name]) for t, v in samples if v[s.name] == v[s.name]]
            tail = [p for p in series if p[0] >= series[-1][0] * 0.2] if series else []
            rss[s.name] = {
                "start_mb": round(series[0][1], 1) if series else None,
                "end_mb": round(series[-1][1], 1) if series else None,
                "max_mb": round(max(v for _, v in series), 1) if series else None,
                "slope_mb_per_min": round(_slope(tail) * 60, 3) if len(tail) >= 3 else None,
                "samples": [[round(t, 1), round(v, 1)] for t, v in series],
            }
        return {
            "rate_per_s": round(rate, 1),
            "duration_s": self.args.duration_s,
            "sent": len(ids),
            **_percentiles(self.reader.latency_s.get("soak", [])),
            "rss": rss,
        }


def _percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50_s": None, "p99_s": None}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_s": round(statistics.median(ordered), 3),
        "p99_s": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
    }


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per second) of ``(t, value)`` points."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


@contextlib.asynccontextmanager
async def pipeline(
    args: argparse.Namespace,
) -> AsyncIterator[tuple[Settings, list[StageProcess], dict[str, int]]]:
    """Broker, topics, the classify and aggregate processes; waits until both serve /readyz."""
    with tempfile.TemporaryDirectory(prefix="newswatch-soak-") as tmp, EmbeddedBroker() as broker:
        workdir = Path(tmp)
        settings = _settings(broker.bootstrap_servers, workdir)
        await create_topics(settings.kafka, settings.topics.all())
        config = workdir / "settings.yaml"
        config.write_text(
            yaml.safe_dump(
                settings.model_dump(
                    mode="json", include={"kafka", "topics", "classify", "aggregate", "models"}
                )
            )
        )
        with (
            stage_process("classify", ["classify"], config, workdir) as classify,
            stage_process("aggregate", ["aggregate"], config, workdir) as aggregate,
        ):
            stages = [classify, aggregate]
            deadline = time.monotonic() + 180
            for s in stages:
                while not s.ready():
                    if s.proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"{s.name} did not start:\n{s.log.read_text()[-3000:]}")
                    await asyncio.sleep(0.2)
            pids = {s.name: s.proc.pid for s in stages} | {"broker": broker.pid or 0, "bench": os.getpid()}
            try:
                yield settings, stages, pids
            except BaseException:
                for s in stages:
                    print(f"--- {s.name} log ---\n{s.log.read_text()[-2000:]}", file=sys.stderr)
                raise


class BareEngine:
    """The engine alone, in this process: the shipped model scoring the replay's texts in
    classify's batches (``models.*`` and ``classify.batch_size`` as the stage has them)."""

    def __init__(self, posts: Posts) -> None:
        from newswatch.models.engine import ClassifierEngine

        settings = load_settings()
        self.engine = ClassifierEngine.load(settings.models)
        self.size = settings.classify.batch_size
        self.texts = [str(r.obj["text"]) for r in posts.records if r.obj is not None and r.obj.get("text")]
        self._next = 0
        self.engine.predict(self.texts[: self.size])  # warm-up

    def run(self, seconds: float) -> dict[str, float]:
        """Score batches for ``seconds``: texts, seconds and CPU seconds (all threads)."""
        done = 0
        started, cpu = time.monotonic(), time.process_time()
        while (elapsed := time.monotonic() - started) < seconds:
            batch = self.texts[self._next : self._next + self.size] or self.texts[: self.size]
            self._next = (self._next + self.size) % len(self.texts)
            self.engine.predict(batch)
            done += len(batch)
            print(f"\rengine: {done} texts in {elapsed:4.1f}/{seconds:.0f} s", end="", file=sys.stderr)
        print("", file=sys.stderr)
        return {"texts": done, "seconds": time.monotonic() - started, "cpu_s": time.process_time() - cpu}

    def describe(self, run: dict[str, float]) -> dict[str, Any]:
        """A run as the JSON reports it."""
        return {
            "model_version": str(self.engine.model_version),
            "backend": str(self.engine.backend),
            "cpu_streams": self.engine.streams,
            "batch_size": self.size,
            "texts": int(run["texts"]),
            "texts_per_s": round(run["texts"] / run["seconds"], 1),
            "cpu_cores": round(run["cpu_s"] / run["seconds"], 3),
        }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.monotonic()
    records, duplicates = load_records(args.file, limit=args.limit)
    posts = Posts(records)
    bare = BareEngine(posts) if args.engine_s > 0 else None
    engine = bare.describe(bare.run(args.engine_s)) if bare is not None else None
    async with pipeline(args) as (settings, stages, pids):
        reader = Reader(settings.kafka, settings.topics)
        stop = asyncio.Event()
        reading = asyncio.create_task(reader.run(stop))
        bench = Bench(args, settings, reader, posts)
        try:
            warm = await bench.step("warmup", args.start_rate, 5)
            capacity = None
            if engine is not None and args.capacity_s > 0:
                offered = args.capacity_factor * engine["texts_per_s"]
                assert bare is not None
                capacity = await bench.capacity(offered, args.capacity_s, stages, pids, bare)
            latency: dict[str, Any] = {}
            steps: list[dict[str, Any]] = []
            if args.rate:  # a given soak rate: no ramp, no latency runs
                max_rate = 0.0
            else:
                max_rate, steps = await bench.ramp()
                if max_rate <= 0:
                    raise SystemExit(f"not even {args.start_rate}/s was sustained: {steps}")
                latency = {
                    "50%": await bench.step("lat50", 0.5 * max_rate, args.latency_s),
                    "90%": await bench.step("lat90", 0.9 * max_rate, args.latency_s),
                }
            soak_rate = args.rate or 0.5 * max_rate
            soak = await bench.soak(soak_rate, stages) if args.duration_s > 0 else None
            await bench.wait_done(bench.published, 300)
            agg_deadline = time.monotonic() + 120
            while stages[1].metric("newswatch_stream_messages_consumed_total") < reader.scored_records:
                if time.monotonic() > agg_deadline:
                    break
                await asyncio.sleep(0.5)
            agg_consumed = stages[1].metric("newswatch_stream_messages_consumed_total")
            agg_dups = stages[1].metric("newswatch_stream_duplicates_total")
        finally:
            stop.set()
            await reading
        print("", file=sys.stderr)
    baseline = (capacity or {}).get("engine_texts_per_s") or (engine or {}).get("texts_per_s")
    published = set(bench.published)
    lost = published - reader.scored_ids - reader.dead_ids
    return {
        "benchmark": "soak",
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared)",
        "model": {"dir": str(settings.models.dir or "shipped"), "variant": settings.models.variant},
        "batch_size": settings.classify.batch_size,
        "aggregate": {"hopping": settings.aggregate.hopping, "grace_ms": settings.aggregate.grace_ms},
        "file": str(args.file),
        "records": len(posts.records),
        "duplicates_dropped": duplicates,
        "warmup": warm,
        "engine": engine,
        "capacity": capacity,
        "stack_over_engine": (
            round(capacity["stack_posts_per_s"] / baseline, 3) if capacity and baseline else None
        ),
        "ramp": steps,
        "max_sustained_per_s": round(max_rate, 1),
        "latency": latency,
        "soak": soak,
        "published": len(published),
        "scored": len(reader.scored_ids),
        "dead_lettered": len(reader.dead_ids),
        "scored_records": reader.scored_records,
        "duplicates_scored": reader.scored_records - len(reader.scored_ids),
        "aggregate_consumed": agg_consumed,
        "aggregate_duplicates": agg_dups,
        "lost": len(lost),
        "wall_s": round(time.monotonic() - t0, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="Replay file (CSV/JSONL).")
    p.add_argument("--limit", type=int, default=None, help="Use at most this many records of the file.")
    p.add_argument("--duration-s", type=float, default=600.0, help="Soak duration (0 skips the soak).")
    p.add_argument("--engine-s", type=float, default=30.0, help="Bare-engine run (0 skips it and capacity).")
    p.add_argument("--capacity-s", type=float, default=60.0, help="Capacity run (0 skips it).")
    p.add_argument(
        "--capacity-factor", type=float, default=1.3, help="Capacity run offers this × the engine's rate."
    )
    p.add_argument(
        "--capacity-cycles", type=int, default=4, help="Engine / stack slices the capacity run alternates."
    )
    p.add_argument(
        "--capacity-from",
        choices=("backlog", "live"),
        default="backlog",
        help="Capacity run drains a backlog published first (default) or posts published during it.",
    )
    p.add_argument("--step-s", type=float, default=20.0, help="Duration of each ramp step.")
    p.add_argument("--latency-s", type=float, default=30.0, help="Duration of each latency run.")
    p.add_argument("--start-rate", type=float, default=10.0, help="First ramp rate (posts/s).")
    p.add_argument("--max-rate", type=float, default=6_400.0, help="Highest ramp rate tried.")
    p.add_argument("--bisect", type=int, default=2, help="Bisection steps after the ramp.")
    p.add_argument(
        "--catchup-s", type=float, default=5.0, help="Time after a step for its posts to be scored."
    )
    p.add_argument("--max-p99-s", type=float, default=5.0, help="p99 latency a sustained rate may have.")
    p.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling interval in the soak.")
    p.add_argument("--rate", type=float, default=None, help="Soak at this rate; skips ramp and latency runs.")
    p.add_argument("--json", action="store_true", help="Print one JSON line (else indented JSON).")
    return p.parse_args(argv)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up the stages on SIGTERM too
    arguments = parse_args()
    try:
        out = asyncio.run(main(arguments))
    except KeyboardInterrupt:
        print("\nsoak: interrupted; stages and broker stopped", file=sys.stderr)
        sys.exit(130)
    print(json.dumps(out) if arguments.json else json.dumps(out, indent=2))
