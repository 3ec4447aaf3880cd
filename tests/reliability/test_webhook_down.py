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

from newswatch.alerts.notify import Notifier
from newswatch.demo.broker import free_port
from newswatch.metrics import Metrics
from newswatch.settings import Settings
from newswatch.settings.alerts import NotifySettings, SinkSettings
from tests.support.alerts import make_alert, produce_alerts
from tests.support.kafka import read_topic
from tests.support.receivers import Receiver
from tests.support.settings import WHSEC, kafka_settings, topic_settings

DOWN_S = 60.0  # how long no process listens on the receiver's port


@pytest.mark.fault
@pytest.mark.slow
async def test_receiver_absent_then_back_gets_every_alert_once(bootstrap: str, unique: str) -> None:
    kafka = kafka_settings(bootstrap, steady=True)
    topics = topic_settings(unique)
    port = free_port()
    receiver = Receiver(url=f"http://127.0.0.1:{port}/hook")
    settings = NotifySettings(  # the default retry schedule
        group_id=f"notify-{unique}",
        delivery_log_topic=f"delivered-{unique}",
        sinks=(SinkSettings(name="hook", type="webhook", url=receiver.url, secret=WHSEC),),
        timeout_s=1.0,
        group_wait_s=0.2,
    )
    events = [make_alert(key=f"$D{i}", signal=s) for i in range(3) for s in ("volume", "negative_share")]
    expected = {e.idempotency_key for e in events}
    metrics = Metrics()

    async def come_back() -> None:
        await asyncio.sleep(DOWN_S)  # the outage itself, not a synchronisation
        await receiver.start("127.0.0.1", port)

    async with Notifier(
        Settings(kafka=kafka, topics=topics, notify=settings), metrics, rng=random.Random(1)
    ) as notifier:
        await produce_alerts(kafka, topics.alerts, events)
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
            await receiver.stop()

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
