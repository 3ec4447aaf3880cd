"""The webhook receiver is absent (connection refused) for a minute, then comes back on its address.

The notifier runs with its default retry schedule (14 attempts, 0.5 s doubling to a 30 s
cap, jittered), so this is the outage an operator gets out of the box.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from newswatch.alerts.notify import Notifier
from newswatch.demo.broker import free_port
from newswatch.metrics import Metrics
from newswatch.settings import KafkaSettings, TopicSettings
from newswatch.settings.alerts import NotifySettings, SinkSettings
from tests.alerts.conftest import Receiver, make_alert
from tests.stream.kafkautil import read_topic

DOWN_S = 60.0  # how long no process listens on the receiver's port


@pytest.mark.fault
@pytest.mark.slow
async def test_receiver_absent_then_back_gets_every_alert_once(bootstrap: str, unique: str) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        broker_compat="tansu",
        partitions=2,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
    )
    topics = TopicSettings(alerts=f"alerts-{unique}", alerts_dead_letter=f"alerts-dlq-{unique}")
    port = free_port()
    receiver = Receiver(url=f"http://127.0.0.1:{port}/hook")
    settings = NotifySettings(
        group_id=f"notify-{unique}",
        delivery_log_topic=f"delivered-{unique}",
        sinks=(
            SinkSettings(
                name="hook", type="webhook", url=receiver.url, secret="whsec_c2VjcmV0LWtleS0xMjM0NTY3OA=="
            ),
        ),
        timeout_s=1.0,
        group_wait_s=0.2,
    )
    events = [make_alert(key=f"$D{i}", signal=s) for i in range(3) for s in ("volume", "negative_share")]
    expected = {e.idempotency_key for e in events}
    metrics = Metrics()
    runner: web.AppRunner | None = None

    async def come_back() -> None:
        nonlocal runner
        await asyncio.sleep(DOWN_S)  # the outage itself, not a synchronisation
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", receiver.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    async with Notifier(kafka, topics, settings, metrics, rng=random.Random(1)) as notifier:
        producer = AIOKafkaProducer(**kafka.client_kwargs())
        await producer.start()
        try:
            for e in events:
                await producer.send_and_wait(topics.alerts, e.to_json(), key=e.fingerprint.encode())
        finally:
            await producer.stop()
        started = time.monotonic()
        back = asyncio.create_task(come_back())
        try:
            deadline = started + DOWN_S + 45  # the longest retry delay is 30 s
            while not set(receiver.alert_keys()) >= expected:
                assert time.monotonic() < deadline, f"delivered {receiver.alert_keys()} of {expected}"
                await notifier.step(timeout_ms=100)
            delivered_after_s = time.monotonic() - started
            for _ in range(10):  # nothing else arrives afterwards
                await notifier.step(timeout_ms=100)
        finally:
            await back
            if runner is not None:
                await runner.cleanup()

    assert Counter(receiver.alert_keys()) == Counter(expected), "each alert exactly once"
    assert delivered_after_s >= DOWN_S, "nothing could be delivered while the receiver was absent"
    retries = metrics.registry.get_sample_value(
        "newswatch_alerts_deliveries_total", {"sink": "hook", "outcome": "retry"}
    )
    assert retries is not None and retries >= 5, "refused connections were retried with backoff"
    assert not metrics.registry.get_sample_value(
        "newswatch_alerts_deliveries_total", {"sink": "hook", "outcome": "dead_letter"}
    )
    dlq = await read_topic(bootstrap, topics.alerts_dead_letter, lambda rs: False, timeout_s=2)
    assert dlq == [], "nothing was dead-lettered"
