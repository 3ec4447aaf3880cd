"""Per-core capacity figures for the capacity plan in ``docs/scaling.md``.

Measures CPU cost rather than wall-clock rate, so the figures mean something on a shared
machine:

* ``engine``: the classify engine (shipped int8 model, ONNX Runtime, 1 intra-op thread,
  batches of 64) on real StockNet tweets: posts per CPU-second of the process.
* ``aggregate``: one ``newswatch aggregate`` process (the real command, embedded broker)
  draining pre-published scored posts: posts per CPU-second of that process.

Prints one JSON line::

    python bench/capacity.py [--posts 2000] [--which engine,aggregate]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newswatch.demo.broker import EmbeddedBroker, free_port
from newswatch.io.kafka import create_topics, make_producer, publish
from newswatch.io.schemas import Post, ScoredPost
from newswatch.models.artifacts import default_data_dir
from newswatch.models.engine import ClassifierEngine
from newswatch.settings import KafkaSettings
from newswatch.settings.models import ModelSettings


def tweets(n: int) -> list[tuple[str, str]]:
    """``(tweet_id, text)`` of the first ``n`` distinct StockNet tweets."""
    path = default_data_dir() / "stocknet_tweets" / "stocknet_tweets_2014_2016.csv"
    out: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["text"].strip():
                out.setdefault(row["tweet_id"], row["text"])
            if len(out) == n:
                break
    return list(out.items())


def engine_cost(n: int) -> dict[str, Any]:
    """Posts per CPU-second of the classify engine, single intra-op thread."""
    texts = [t for _, t in tweets(n)]
    engine = ClassifierEngine.load(ModelSettings(device="cpu", cpu_streams=1, intra_op_threads=1))
    try:
        engine.predict(texts[:64])
        wall, cpu = time.perf_counter(), time.process_time()
        engine.predict(texts)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        engine.close()
    return {"posts": n, "posts_per_cpu_second": round(n / cpu, 1), "wall_posts_per_s": round(n / wall, 1)}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _consumed(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    prefix = "newswatch_stream_messages_consumed_total{"
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(prefix))


def aggregate_cost(n: int) -> dict[str, Any]:
    """Posts per CPU-second of one ``newswatch aggregate`` process draining ``n`` scored posts."""
    now = int(time.time() * 1000)
    records = []
    for i, (tweet_id, text) in enumerate(tweets(n)):
        post = Post(
            id=f"stocknet-{tweet_id}",
            text=text,
            source="stocknet",
            published_at=datetime.fromtimestamp(now / 1000, UTC),
            entities=(f"$T{i % 50}",),
        )
        scored = ScoredPost(
            post=post,
            topic=("Earnings", "Macro", "M&A")[i % 3],
            topic_prob=0.9,
            sentiment=("bearish", "bullish", "neutral")[i % 3],
            sentiment_probs={"bearish": 0.2, "bullish": 0.2, "neutral": 0.6},
            score=0.0,
            model_version="bench",
            record_ms=now,
            scored_ms=now,
            inference_ms=1.0,
        )
        records.append((post.id.encode(), scored.to_json(), now))
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=2, broker_compat="tansu")
        topics = {"SCORED": "bench-scored", "WINDOWS": "bench-windows", "DEAD_LETTER": "bench-dlq"}

        async def setup() -> None:
            await create_topics(kafka, list(topics.values()))
            producer = make_producer(kafka)
            await producer.start()
            try:
                await publish(producer, topics["SCORED"], records)
            finally:
                await producer.stop()

        asyncio.run(setup())
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
        env.update({f"NEWSWATCH_TOPICS_{k}": v for k, v in topics.items()})
        env.update(
            {
                "NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "NEWSWATCH_KAFKA_BROKER_COMPAT": "tansu",
                "NEWSWATCH_KAFKA_PARTITIONS": "2",
                "NEWSWATCH_METRICS_PORT": str(port),
                "NEWSWATCH_AGGREGATE_APP_ID": "bench-aggregate",
                "NEWSWATCH_AGGREGATE_DATA_DIR": tmp,
            }
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "newswatch.cli.main", "aggregate"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            start: tuple[float, float, float] | None = None
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                try:
                    done = _consumed(port)
                except OSError:
                    done = 0.0
                if done > 0 and start is None:
                    start = (time.monotonic(), done, _cpu_seconds(proc.pid))
                if start is not None and done >= n:
                    wall = time.monotonic() - start[0]
                    cpu = _cpu_seconds(proc.pid) - start[2]
                    drained = done - start[1]
                    return {
                        "posts": n,
                        "posts_per_cpu_second": round(drained / cpu, 1),
                        "wall_posts_per_s": round(drained / wall, 1),
                    }
                time.sleep(0.2)
            raise SystemExit("aggregate did not drain the posts within 900 s")
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    """Run the selected measurements and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--which", default="engine,aggregate", help="Comma-separated: engine, aggregate.")
    args = parser.parse_args()
    runs = {"engine": engine_cost, "aggregate": aggregate_cost}
    chosen = args.which.split(",")
    unknown = [w for w in chosen if w not in runs]
    if unknown:
        parser.error(f"--which: unknown {', '.join(unknown)}; choose from {', '.join(runs)}")
    result: dict[str, Any] = {"cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)}
    for which in chosen:
        result[which] = runs[which](args.posts)
    result["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
