"""Two classify workers in one group; one is SIGKILLed: the survivor takes its partition, nothing is lost."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from newswatch.demo.broker import free_port
from newswatch.io.kafka import create_topics
from newswatch.metrics import Metrics
from newswatch.models.engine import ClassifierEngine
from newswatch.stream.classify import ClassifyWorker
from tests.support.kafka import AckedPublisher, read_topic, scored_ids, value
from tests.support.poll import wait_until
from tests.support.settings import settings_for, stage_env


def _produced(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    found = re.search(r'^newswatch_stream_messages_produced_total\{stage="classify"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.fault
@pytest.mark.slow
async def test_survivor_takes_over_the_killed_workers_partition(
    bootstrap: str, unique: str, engine: ClassifierEngine, tmp_path: Path
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=4, batch_max_wait_ms=20, max_in_flight_batches=3)
    await create_topics(settings.kafka, settings.topics.all())
    port = free_port()
    env = stage_env(settings)
    log = tmp_path / "victim.log"
    with log.open("wb") as out:
        victim = subprocess.Popen(
            [sys.executable, "-m", "newswatch.cli.main", "classify", "--metrics-port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    publisher = AckedPublisher(settings, "v", per_tick=4)
    metrics = Metrics()
    produced = "newswatch_stream_messages_produced_total"
    try:
        async with ClassifyWorker(settings, metrics, engine=engine) as survivor:
            await survivor.wait_joined(60)
            publisher.start()
            # both members score: each owns one of the two partitions
            await wait_until(
                lambda: (
                    (_produced(port) >= 8 and value(metrics, produced, stage="classify") >= 8)
                    or victim.poll() is not None
                ),
                120,
                "both workers to score",
            )
            assert victim.poll() is None, log.read_text()[-3000:]
            victim.send_signal(signal.SIGKILL)
            assert victim.wait(timeout=10) == -signal.SIGKILL
            at_kill = value(metrics, produced, stage="classify")
            acked_at_kill = len(publisher.acked)
            await wait_until(
                lambda: len(publisher.acked) >= acked_at_kill + 80, 60, "80 more posts published"
            )
            await publisher.stop()
            acked = set(publisher.acked)
            scored = await read_topic(
                bootstrap, settings.topics.scored, lambda rs: acked <= set(scored_ids(rs)), timeout_s=120
            )
            after_kill = value(metrics, produced, stage="classify") - at_kill
            assert survivor.alive
    finally:
        await publisher.stop()
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    ids = scored_ids(scored)
    lost = acked - set(ids)
    assert not lost, f"lost {len(lost)} of {len(acked)}: {sorted(lost)[:10]}"
    assert after_kill >= 80, "the survivor scored the stream of both partitions after the kill"
    print(f"survivor: {len(acked)} posts, {len(ids) - len(set(ids))} duplicates after the kill")
