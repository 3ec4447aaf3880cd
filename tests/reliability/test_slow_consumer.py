"""A slow consumer: lag grows, in-flight batches stay capped, worker memory stays bounded, nothing is lost."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from newswatch.demo.broker import free_port
from newswatch.io.kafka import create_topics, make_producer
from tests.support.kafka import post_json, read_topic, scored_ids
from tests.support.settings import settings_for, stage_env

POSTS = 1_500
TEXT_BYTES = 19_000  # 1,500 posts ≈ 29 MB on the topic: far more than the worker may hold
# (each text under the 20,000-character field limit, newswatch.io.schemas.LIMITS)
MAX_IN_FLIGHT = 2
BATCH = 16
RSS_BOUND_MB = 30.0  # growth allowed over the warmed-up worker while the whole backlog waits


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text: str = resp.read().decode()
        return text


def _sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))


@pytest.mark.fault
@pytest.mark.slow
async def test_slow_engine_grows_lag_not_memory_and_loses_nothing(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=BATCH, max_in_flight_batches=MAX_IN_FLIGHT)
    await create_topics(settings.kafka, settings.topics.all())
    port = free_port()
    report = tmp_path / "report.json"
    # 24 model runs per batch: the length-bucketed engine scores ~470 posts/s here, so the worker
    # manages ~20/s, well behind the producer (6 runs left it only just behind, and a fast
    # machine could keep up)
    env = stage_env(settings, SLOW_REPEAT="24", SLOW_METRICS_PORT=str(port), SLOW_REPORT=str(report))
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.slow_worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        # warm up: a first small load is scored, so the baseline includes the model's working memory
        warm = [f"w{i}" for i in range(3 * BATCH)]
        await _send(producer, settings.topics.posts, warm)
        await read_topic(bootstrap, settings.topics.scored, lambda rs: len(rs) >= len(warm), timeout_s=120)
        baseline = _rss_mb(proc.pid)

        ids = [f"s{i}" for i in range(POSTS)]
        sending = asyncio.create_task(_send(producer, settings.topics.posts, ids))
        peak_rss, peak_lag = baseline, 0.0
        deadline = time.monotonic() + 120
        while not (sending.done() and peak_lag >= POSTS / 2):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"lag only reached {peak_lag}"
            peak_rss = max(peak_rss, _rss_mb(proc.pid))
            peak_lag = max(
                peak_lag,
                _sum(await asyncio.to_thread(_metrics, port), "newswatch_stream_consumer_lag_messages"),
            )
            await asyncio.sleep(0.1)
        await sending
        for _ in range(20):  # the backlog sits in the broker, not in the worker
            peak_rss = max(peak_rss, _rss_mb(proc.pid))
            await asyncio.sleep(0.1)

        proc.send_signal(signal.SIGUSR1)  # the engine is fast again: the backlog drains
        everything = set(warm) | set(ids)
        scored = await read_topic(
            bootstrap, settings.topics.scored, lambda rs: everything <= set(scored_ids(rs)), timeout_s=240
        )
        text = await asyncio.to_thread(_metrics, port)
    finally:
        await producer.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    assert proc.returncode == 0, log.read_text()[-3000:]
    stats = json.loads(report.read_text())
    lost = everything - set(scored_ids(scored))
    assert not lost, f"lost {len(lost)}: {sorted(lost)[:10]}"
    assert _sum(text, "newswatch_stream_dead_lettered_total") == 0
    assert 0 < stats["peak_in_flight"] <= MAX_IN_FLIGHT, stats
    assert peak_lag >= POSTS / 2, "the consumer fell behind"
    growth = peak_rss - baseline
    print(
        f"slow consumer: baseline {baseline:.0f} MB, peak {peak_rss:.0f} MB, peak lag {peak_lag:.0f}, {stats}"
    )
    assert growth < RSS_BOUND_MB, (
        f"worker RSS grew {growth:.0f} MB with a {POSTS * TEXT_BYTES / 1e6:.0f} MB backlog"
    )


async def _send(producer: object, topic: str, ids: list[str]) -> None:
    from aiokafka import AIOKafkaProducer

    assert isinstance(producer, AIOKafkaProducer)
    pad = "x" * TEXT_BYTES
    futures = []
    for n, i in enumerate(ids):
        raw = post_json(i, n, text=f"$AAPL beats estimates {pad}")
        futures.append(await producer.send(topic, raw, key=i.encode()))
    await asyncio.gather(*futures)
