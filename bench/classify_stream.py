"""Stream benchmark of the classify stage: embedded broker → classify worker → scored topic.

Posts are real StockNet tweets (``../shared/data/stocknet_tweets/…``, deduplicated on
tweet_id). Two runs:

* ``saturated``: ``--posts`` posts are published first, then one worker drains them;
  throughput = posts / (time from the worker's first to its last scored batch).
* ``paced``: posts are published at ``--rate`` posts/s while the worker runs; latency is
  per post, from its publish (Kafka timestamp of the input) to its scored batch.

Prints one JSON line::

    python bench/classify_stream.py [--posts 5000] [--rate 100] [--seconds 20] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from newswatch.demo.broker import EmbeddedBroker
from newswatch.demo.replay import load_records
from newswatch.io.kafka import create_topics, make_consumer, make_producer, publish
from newswatch.io.schemas import ScoredPost
from newswatch.metrics import Metrics
from newswatch.models.engine import ClassifierEngine
from newswatch.settings import KafkaSettings, Settings, TopicSettings, load_settings
from newswatch.settings.stream import ClassifySettings
from newswatch.stream.classify import ClassifyWorker

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "stocknet_tweets"


def _settings(bootstrap: str, run: str, batch_size: int) -> Settings:
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        partitions=2,
        session_timeout_ms=2_000,
        heartbeat_interval_ms=300,
        broker_compat="tansu",
    )
    topics = TopicSettings(
        posts=f"posts-{run}",
        scored=f"scored-{run}",
        panes=f"panes-{run}",
        windows=f"windows-{run}",
        alerts=f"alerts-{run}",
        dead_letter=f"dlq-{run}",
        alerts_dead_letter=f"adlq-{run}",
    )
    base = load_settings()
    return Settings(
        kafka=kafka,
        topics=topics,
        classify=ClassifySettings(group_id=f"bench-{run}", batch_size=batch_size),
        models=base.models,
    )


async def _scored(settings: Settings, n: int, timeout_s: float) -> list[ScoredPost]:
    consumer = make_consumer(
        settings.kafka, settings.topics.scored, group_id=f"{settings.classify.group_id}-r"
    )
    await consumer.start()
    out: list[ScoredPost] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            out += [ScoredPost.from_json(r.value) for rs in batch.values() for r in rs if r.value is not None]
    finally:
        await consumer.stop()
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _run(args: argparse.Namespace, engine: ClassifierEngine, bootstrap: str) -> dict[str, Any]:
    records, _ = load_records(DATA / "stocknet_tweets_2014_2016.csv", source="stocknet", limit=args.posts)
    payloads = [(r.key, r.payload()) for r in records]
    result: dict[str, Any] = {}

    # saturated: everything is waiting before the worker starts
    settings = _settings(bootstrap, "sat", args.batch_size)
    await create_topics(settings.kafka, settings.topics.all())
    producer = make_producer(settings.kafka)
    await producer.start()
    started = time.perf_counter()
    now = int(time.time() * 1000)
    await publish(producer, settings.topics.posts, [(k, v, now) for k, v in payloads])
    result["publish_posts_per_s"] = round(len(payloads) / (time.perf_counter() - started))
    async with ClassifyWorker(settings, Metrics(), engine=engine):
        scored = await _scored(settings, len(payloads), 600)
    if len(scored) >= 2:
        span_s = (max(s.scored_ms for s in scored) - min(s.scored_ms for s in scored)) / 1000
        result["saturated"] = {"posts": len(scored), "posts_per_s": round(len(scored) / max(span_s, 1e-3), 1)}

    # paced: a steady rate while the worker runs
    settings = _settings(bootstrap, "paced", args.batch_size)
    await create_topics(settings.kafka, settings.topics.all())
    n = int(args.rate * args.seconds)
    paced = [(f"p{i}".encode(), payloads[i % len(payloads)][1]) for i in range(n)]
    async with ClassifyWorker(settings, Metrics(), engine=engine) as worker:
        await worker.wait_joined(30)
        t0 = time.monotonic()
        for i, (_key, value) in enumerate(paced):
            delay = t0 + i / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            obj = json.loads(value)
            obj["id"] = f"p{i}"
            await producer.send(
                settings.topics.posts, value=json.dumps(obj).encode(), key=f"p{i}".encode(), timestamp_ms=None
            )
        scored = await _scored(settings, n, 120)
    await producer.stop()
    latencies = [float(s.scored_ms - s.record_ms) for s in scored]
    result["paced"] = {
        "rate_per_s": args.rate,
        "posts": len(scored),
        "latency_ms_p50": _pct(latencies, 0.50),
        "latency_ms_p99": _pct(latencies, 0.99),
        "latency_ms_mean": round(statistics.fmean(latencies), 1) if latencies else None,
        "note": "publish (input Kafka timestamp) to the scored batch being produced",
    }
    return result


def main() -> None:
    """Run both benchmarks on an embedded broker and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--posts", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    settings = load_settings()
    engine = ClassifierEngine.load(settings.models)
    with EmbeddedBroker() as broker:
        result = asyncio.run(_run(args, engine, broker.bootstrap_servers))
    result.update(
        {
            "model_version": engine.model_version,
            "backend": engine.backend,
            "batch_size": args.batch_size,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
