"""Load and soak benchmark of the whole pipeline: real tweets → classify → aggregate, on the embedded broker.

Posts are the StockNet tweets (``../shared/data/stocknet_tweets/stocknet_tweets_2014_2016.csv``,
deduplicated on tweet_id by :func:`newswatch.demo.replay.load_records`), re-timed to the
send time so the aggregator's event-time windows advance live. The classify stage
(``newswatch classify``) and the aggregator (``newswatch aggregate``) run as their own
processes, exactly as deployed; this process publishes and reads the scored topic.

Phases:

0. **engine**: the bare engine alone in this process, before the stages start: the shipped
   model (``models.*``) scoring the same tweets in batches of ``classify.batch_size`` for
   ``--engine-s``: texts/s, the rate the pipeline is measured against. It runs again after
   the stages have stopped (``engine_after``), and the baseline is the faster of the two: on
   a shared VM whose speed drifts, a disturbed engine run then cannot flatter the ratio.
1. **capacity**: a backlog of ``--capacity-factor`` × the engine's rate × ``--capacity-s``
   posts is published, then the stack drains it for ``--capacity-s`` while this process
   stays idle (``--capacity-from live`` publishes during the window instead, see
   :meth:`Bench.capacity`); the scored rate over the last 70 % is what the whole stack
   carries (``stack_over_engine`` = that rate / the engine's), provided the aggregator keeps
   up (its consumed posts at the end of the phase are reported beside the scored ones). The
   CPU each process used in the window is reported too.
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
from aiokafka import AIOKafkaConsumer, TopicPartition

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
                    now = datetime.now(UTC)
                    ident, raw = self.posts.next(now)
                    self.reader.phase_of[ident] = phase
                    futures.append(
                        await producer.send(
                            self.settings.topics.posts,
                            raw,
                            key=ident.encode(),
                            timestamp_ms=int(now.timestamp() * 1000),
                        )
                    )
                    ids.append(ident)
                if len(futures) > 2_000:
                    await asyncio.gather(*futures)
                    futures.clear()
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

    async def publish_backlog(self, phase: str, count: int) -> list[str]:
        """Publish ``count`` posts as fast as the producer takes them; returns the ids (all acknowledged)."""
        producer = make_producer(self.settings.kafka, linger_ms=5)
        await producer.start()
        ids: list[str] = []
        futures: list[asyncio.Future[Any]] = []
        try:
            while len(ids) < count:
                now = datetime.now(UTC)
                ident, raw = self.posts.next(now)
                self.reader.phase_of[ident] = phase
                stamp = int(now.timestamp() * 1000)
                topic = self.settings.topics.posts
                futures.append(await producer.send(topic, raw, key=ident.encode(), timestamp_ms=stamp))
                ids.append(ident)
                if len(futures) >= 2_000:
                    await asyncio.gather(*futures)
                    futures.clear()
                    self.say(f"{phase}: backlog {len(ids)}/{count} published")
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        self.published += ids
        return ids

    async def capacity(
        self, rate: float, seconds: float, stages: list[StageProcess], pids: dict[str, int]
    ) -> dict[str, Any]:
        """The scored rate the stack sustains with more work waiting than it can take.

        By default (``--capacity-from backlog``) the phase first publishes ``rate × seconds``
        posts as fast as it can, then measures the stages draining them for ``seconds``
        (window: its last 70 %) while this process stays off the CPU: its reader pauses and the
        rate is the classify stage's own produced counter, scraped once a second. The stack's
        processes then share the machine only with each other, as they would in a deployment
        whose producers and consumers run elsewhere. ``--capacity-from live`` publishes at
        ``rate`` during the window instead (the method before 2026-12-07: the benchmark's own
        publishing and reading then take their share of the two cores).

        Each process's CPU (broker, stages, this benchmark) over the window shows where the
        machine's cores went.
        """
        live = self.args.capacity_from == "live"
        marks: list[tuple[float, float, dict[str, float]]] = []
        stop = asyncio.Event()
        classify = stages[0]

        def produced() -> float:
            if live:
                return float(self.reader.scored_records)
            return classify.metric("newswatch_stream_messages_produced_total")

        async def mark() -> None:
            while not stop.is_set():
                cpu = {name: cpu_s(pid) for name, pid in pids.items()}
                marks.append((time.monotonic(), produced(), cpu))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

        if live:
            marker = asyncio.create_task(mark())
            started = time.monotonic()
            try:
                ids = await self.publish("capacity", rate, seconds)
            finally:
                stop.set()
                await marker
        else:
            ids = await self.publish_backlog("capacity", int(rate * seconds))
            self.reader.pause()
            marker = asyncio.create_task(mark())
            started = time.monotonic()
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), seconds)
            finally:
                stop.set()
                await marker
                self.reader.resume()
        window = [m for m in marks if m[0] - started >= 0.3 * seconds]
        span = window[-1][0] - window[0][0] if len(window) > 2 else 0.0
        carried = (window[-1][1] - window[0][1]) / span if span else 0.0
        cores = {n: round((window[-1][2][n] - window[0][2][n]) / span, 3) for n in pids} if span else {}
        scored_at_end = produced()
        aggregated_at_end = stages[1].metric("newswatch_stream_messages_consumed_total")
        await self.wait_done(ids, 300)  # drain before the next phase
        return {
            "from": "live" if live else "backlog",
            "offered_per_s": round(rate, 1) if live else None,
            "backlog_posts": None if live else len(ids),
            "seconds": seconds,
            "sent": len(ids),
            "stack_posts_per_s": round(carried, 1),
            "cpu_cores": cores,
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


def bare_engine(posts: Posts, seconds: float) -> dict[str, Any]:
    """The engine alone: the shipped model scoring the replay's texts in classify's batches."""
    from newswatch.models.engine import ClassifierEngine

    settings = load_settings()
    engine = ClassifierEngine.load(settings.models)
    size = settings.classify.batch_size
    texts = [str(r.obj["text"]) for r in posts.records if r.obj is not None and r.obj.get("text")]
    engine.predict(texts[:size])  # warm-up
    done, i = 0, 0
    started, cpu = time.monotonic(), time.process_time()
    while (elapsed := time.monotonic() - started) < seconds:
        batch = texts[i : i + size] or texts[:size]
        i = (i + size) % len(texts)
        engine.predict(batch)
        done += len(batch)
        print(f"\rengine: {done} texts in {elapsed:4.1f}/{seconds:.0f} s", end="", file=sys.stderr)
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    print("", file=sys.stderr)
    return {
        "model_version": str(engine.model_version),
        "backend": str(engine.backend),
        "batch_size": size,
        "texts": done,
        "texts_per_s": round(done / elapsed, 1),
        "cpu_cores": round(cpu / elapsed, 3),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.monotonic()
    records, duplicates = load_records(args.file, limit=args.limit)
    posts = Posts(records)
    engine = bare_engine(posts, args.engine_s) if args.engine_s > 0 else None
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
                capacity = await bench.capacity(offered, args.capacity_s, stages, pids)
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
    engine_after = bare_engine(posts, args.engine_s) if engine is not None and capacity is not None else None
    rates = [e["texts_per_s"] for e in (engine, engine_after) if e is not None]
    baseline = max(rates) if rates else None
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
        "engine_after": engine_after,
        "engine_texts_per_s": round(baseline, 1) if baseline else None,
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
