"""Fault: the notifier is killed mid-delivery and restarted: nothing lost, nothing acknowledged re-sent."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from newswatch.io.kafka import create_topics
from newswatch.io.logtopic import read_to_end
from newswatch.settings import KafkaSettings, TopicSettings

from .conftest import Receiver, make_alert
from .test_notify import produce

pytestmark = [pytest.mark.fault, pytest.mark.slow]

N = 12


async def start_notifier(config: Path, log: Path) -> asyncio.subprocess.Process:
    """``newswatch notify`` as a child process with ``config``, its stderr appended to ``log``."""
    env = {**os.environ, "NEWSWATCH_METRICS_PORT": "0"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "newswatch.cli.main", "--config", str(config), "--log-level", "INFO",
        "notify", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log.open("ab"),
    )  # fmt: skip


async def _wait(cond: object, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}; notifier log:\n{log.read_text()[-3000:]}"
        await asyncio.sleep(0.05)


async def test_notifier_killed_mid_delivery_loses_nothing(
    kafka: KafkaSettings, topics: TopicSettings, receiver: Receiver, unique: str, tmp_path: Path
) -> None:
    receiver.delay_s = 0.3  # deliveries take a while, so the kill lands mid-flight
    log_topic = f"delivered-{unique}"
    keys = [f"$K{i:02d}" for i in range(N)]
    config = tmp_path / "newswatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap_servers": kafka.bootstrap_servers,
                    "partitions": 2,
                    "session_timeout_ms": 6000,
                    "heartbeat_interval_ms": 1000,
                    "broker_compat": "tansu",
                },
                "topics": topics.model_dump(),
                "notify": {
                    "group_id": f"notify-{unique}",
                    "delivery_log_topic": log_topic,
                    "group_wait_s": 0.0,
                    "groups": {f"g{k}": [k] for k in keys},  # one notification per alert
                    "sinks": [{"name": "hook", "type": "webhook", "url": receiver.url}],
                },
            }
        )
    )
    await create_topics(kafka, [topics.alerts], partitions=2)
    events = [make_alert(key=k) for k in keys]
    log = tmp_path / "notify.log"
    proc = await start_notifier(config, log)
    trickle: asyncio.Task[None] | None = None
    try:
        await produce(kafka, topics.alerts, events[:1])
        await _wait(lambda: len(receiver.accepted) >= 1, 60, "first delivery", log)

        async def rest() -> None:  # a steady trickle, so deliveries are spread out
            for e in events[1:]:
                await produce(kafka, topics.alerts, [e])
                await asyncio.sleep(0.3)

        trickle = asyncio.create_task(rest())
        await _wait(lambda: len(receiver.accepted) >= 4, 60, "more deliveries", log)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if trickle is not None:
            await trickle
    before_restart = Counter(receiver.alert_keys())
    assert len(before_restart) < N, "the kill should land before everything was delivered"
    reader = AIOKafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False)
    await reader.start()
    try:
        acknowledged = {k.decode().split("|", 1)[1] for k, _ in await read_to_end(reader, log_topic)}
    finally:
        await reader.stop()
    assert acknowledged, "some deliveries were acknowledged before the kill"

    proc = await start_notifier(config, log)
    try:
        expected = {e.idempotency_key for e in events}
        await _wait(lambda: set(receiver.alert_keys()) >= expected, 90, "all alerts after restart", log)
        await asyncio.sleep(1.0)  # let any (wrong) re-sends arrive before judging
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    raw = Counter(a["idempotency_key"] for r in receiver.accepted for a in r.json()["alerts"])
    assert set(raw) == expected, "nothing lost"
    for key in acknowledged:
        assert raw[key] == 1, f"{key} was acknowledged before the kill but sent again"
    # A receiver deduplicating by webhook-id sees each alert exactly once.
    assert Counter(receiver.alert_keys()) == Counter(expected)
