"""Fault: the notifier is killed mid-delivery and restarted: nothing lost, nothing acknowledged re-sent."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from newswatch.io.kafka import create_topics
from newswatch.io.logtopic import read_to_end
from newswatch.settings import KafkaSettings, TopicSettings
from tests.support.alerts import make_alert, produce_alerts, start_notifier
from tests.support.kafka import committed
from tests.support.poll import wait_until
from tests.support.receivers import Receiver
from tests.support.settings import notify_config

pytestmark = [pytest.mark.fault, pytest.mark.slow]

N = 12


async def test_notifier_killed_mid_delivery_loses_nothing(
    kafka: KafkaSettings, topics: TopicSettings, receiver: Receiver, unique: str, tmp_path: Path
) -> None:
    receiver.delay_s = 0.3  # deliveries take a while, so the kill lands mid-flight
    log_topic = f"delivered-{unique}"
    keys = [f"$K{i:02d}" for i in range(N)]
    config = tmp_path / "newswatch.yaml"
    config.write_text(notify_config(kafka, topics, unique, receiver.url, keys))
    await create_topics(kafka, [topics.alerts], partitions=2)
    events = [make_alert(key=k) for k in keys]
    log = tmp_path / "notify.log"

    def notifier_log() -> str:
        return f"notifier log:\n{log.read_text()[-3000:]}"

    proc = await start_notifier(config, log)
    trickle: asyncio.Task[None] | None = None
    try:
        await produce_alerts(kafka, topics.alerts, events[:1])
        await wait_until(lambda: len(receiver.accepted) >= 1, 60, "first delivery", detail=notifier_log)

        async def rest() -> None:  # a steady trickle, so deliveries are spread out
            for e in events[1:]:
                await produce_alerts(kafka, topics.alerts, [e])
                await asyncio.sleep(0.3)

        trickle = asyncio.create_task(rest())
        await wait_until(lambda: len(receiver.accepted) >= 4, 60, "more deliveries", detail=notifier_log)
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
        await wait_until(
            lambda: set(receiver.alert_keys()) >= expected,
            90,
            "all alerts after restart",
            detail=notifier_log,
        )

        # Any (wrong) re-send happens while the notifier handles an alert record, before it commits
        # that record's offset: once the group's commits cover every alert record, all it could
        # send has been sent.
        async def every_alert_committed() -> bool:
            group = f"notify-{unique}"
            return await committed(kafka.bootstrap_servers, group, topics.alerts, partitions=2) >= N

        await wait_until(
            every_alert_committed, 60, "the commits of every alert", interval_s=0.2, detail=notifier_log
        )
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
