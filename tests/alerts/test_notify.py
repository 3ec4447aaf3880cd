"""The notifier against the real broker and a real HTTP receiver: retries, grouping, dead letters."""

from __future__ import annotations

import random
import time
from collections import Counter

from aiokafka import AIOKafkaConsumer

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.notify import Notifier
from newswatch.alerts.routing import Router, group_notifications
from newswatch.io.schemas import DeadLetter
from newswatch.metrics import Metrics
from newswatch.settings import KafkaSettings, Settings, TopicSettings
from newswatch.settings.alerts import NotifySettings, RouteSettings, SinkSettings
from tests.support.alerts import make_alert, produce_alerts, pump
from tests.support.receivers import Receiver
from tests.support.settings import notify_settings


async def test_flaky_receiver_gets_every_alert_exactly_once(
    kafka: KafkaSettings, topics: TopicSettings, receiver: Receiver, unique: str
) -> None:
    """500s and timeouts for a while, then recovery: every alert arrives, each once by idempotency key."""
    receiver.behaviour = lambda n: 500 if n % 2 == 0 and n < 6 else ("hang" if n < 6 else 200)
    metrics = Metrics()
    settings = notify_settings(receiver.url, unique, max_attempts=10)
    events = [make_alert(key=f"$K{i}", signal=s) for i in range(4) for s in ("volume", "negative_share")]
    # $K0's two alerts are one incident (same key): it resolves, as one notification, once both have.
    events += [make_alert(key="$K0", status="resolved", signal=s) for s in ("volume", "negative_share")]
    async with Notifier(
        Settings(kafka=kafka, topics=topics, notify=settings), metrics, rng=random.Random(0)
    ) as notifier:
        await produce_alerts(kafka, topics.alerts, events)
        expected = {e.idempotency_key for e in events}
        await pump(notifier, lambda: set(receiver.alert_keys()) >= expected)
        # A few more polls: nothing else arrives.
        for _ in range(5):
            await notifier.step(timeout_ms=100)
    keys = receiver.alert_keys()
    assert Counter(keys) == Counter(expected), "each alert exactly once"
    assert receiver.attempts > len(receiver.accepted), "the receiver did fail some attempts"
    assert (
        metrics.registry.get_sample_value(
            "newswatch_alerts_deliveries_total", {"sink": "hook", "outcome": "retry"}
        )
        >= 3
    )
    assert (
        metrics.registry.get_sample_value(
            "newswatch_alerts_deliveries_total", {"sink": "hook", "outcome": "ok"}
        )
        >= 1
    )


async def test_sector_surge_is_one_grouped_notification(
    kafka: KafkaSettings, topics: TopicSettings, receiver: Receiver, unique: str
) -> None:
    semis = tuple(f"$S{i:02d}" for i in range(15))
    settings = notify_settings(receiver.url, unique, groups={"semis": semis}, group_wait_s=1.5)
    events = [make_alert(key=k) for k in semis] + [make_alert(key="$JPM")]
    async with Notifier(Settings(kafka=kafka, topics=topics, notify=settings)) as notifier:
        await produce_alerts(kafka, topics.alerts, events)
        await pump(notifier, lambda: len(receiver.alert_keys()) >= 16)
    bodies = [r.json() for r in receiver.accepted]
    sector = [b for b in bodies if b["group"] == "semis"]
    assert len(sector) == 1 and len(sector[0]["alerts"]) == 15 and "15 alerts" in sector[0]["title"]
    assert [len(b["alerts"]) for b in bodies if b["group"] == "entity"] == [1]


async def test_rejected_alerts_are_dead_lettered_and_processing_goes_on(
    kafka: KafkaSettings, topics: TopicSettings, receiver: Receiver, unique: str
) -> None:
    receiver.behaviour = lambda n: 400
    metrics = Metrics()
    settings = notify_settings(receiver.url, unique)
    events = [make_alert(key="$BAD")]
    async with Notifier(Settings(kafka=kafka, topics=topics, notify=settings), metrics) as notifier:
        await produce_alerts(kafka, topics.alerts, events, raw=[b"{not json"])

        def dead(reason: str) -> float:
            labels = {"stage": "notify", "reason": reason}
            return metrics.registry.get_sample_value("newswatch_stream_dead_lettered_total", labels) or 0.0

        await pump(notifier, lambda: dead("rejected") >= 1 and dead("invalid_alert") >= 1)
    assert receiver.attempts == 1, "a 400 is not retried"
    consumer = AIOKafkaConsumer(
        topics.alerts_dead_letter, **kafka.client_kwargs(), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        letters: list[DeadLetter] = []
        deadline = time.monotonic() + 20
        while len(letters) < 2 and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                letters += [DeadLetter.from_json(r.value or b"") for r in recs]
    finally:
        await consumer.stop()
    reasons = {d.reason: d for d in letters}
    assert set(reasons) == {"rejected", "invalid_alert"}
    assert AlertEvent.from_json(reasons["rejected"].raw).key == "$BAD"
    assert "HTTP 400" in reasons["rejected"].detail and reasons["invalid_alert"].raw == b"{not json"
    assert (
        metrics.registry.get_sample_value(
            "newswatch_alerts_deliveries_total", {"sink": "hook", "outcome": "dead_letter"}
        )
        == 1
    )


def test_routes_map_severity_topic_and_entity_to_sinks() -> None:
    settings = NotifySettings(
        routes=(
            RouteSettings(sinks=("pager",), min_severity="critical"),
            RouteSettings(sinks=("semis-chat",), keys=("$NVDA", "$AMD"), stop=True),
            RouteSettings(sinks=("chat",), kinds=("topic", "entity")),
        ),
        groups={"semis": ("$NVDA", "$AMD")},
    )
    router = Router(settings, ["pager", "semis-chat", "chat"])
    assert router.sinks_for(make_alert(key="$NVDA", severity="critical")) == ["pager", "semis-chat"]
    assert router.sinks_for(make_alert(key="$JPM")) == ["chat"]
    assert router.sinks_for(make_alert(key="$JPM", kind="source")) == []
    notes = group_notifications(
        router, [make_alert(key="$NVDA"), make_alert(key="$AMD"), make_alert(key="$JPM")]
    )
    assert [len(n.alerts) for n in notes["semis-chat"]] == [2] and notes["semis-chat"][0].group == "semis"
    assert [n.alerts[0].key for n in notes["chat"]] == ["$JPM"]


async def test_firing_and_resolve_in_one_batch_arrive_in_order(
    kafka: KafkaSettings, topics: TopicSettings, receiver: Receiver, unique: str
) -> None:
    """PagerDuty must see the trigger before the resolve, even when both are read in one batch."""
    receiver.behaviour = lambda n: 202
    receiver.delay_s = 0.2
    pd = SinkSettings(name="pd", type="pagerduty", url=receiver.url, secret="routing-key-0123456789")
    settings = notify_settings(receiver.url, unique, sinks=(pd,), group_wait_s=1.0)
    events = [make_alert(key=f"$O{i}", status=s) for i in range(3) for s in ("firing", "resolved")]
    async with Notifier(Settings(kafka=kafka, topics=topics, notify=settings)) as notifier:
        await produce_alerts(kafka, topics.alerts, events)
        await pump(notifier, lambda: len(receiver.accepted) >= 6)
    actions: dict[str, list[str]] = {}
    for r in receiver.accepted:
        body = r.json()
        actions.setdefault(body["dedup_key"], []).append(body["event_action"])
    assert sorted(actions.values()) == [["trigger", "resolve"]] * 3
