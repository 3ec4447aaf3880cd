"""The demo console: stats folding, the summary line, and the loopback webhook receiver."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
from rich.console import Console

from newswatch.demo.console import LiveStats, WebhookReceiver, percentile, render
from newswatch.io.schemas import Post, ScoredPost, WindowStat


def _scored(i: int, latency_ms: int) -> ScoredPost:
    post = Post(id=f"p{i}", text="x", source="s", published_at=datetime(2026, 1, 1, tzinfo=UTC))
    return ScoredPost(
        post=post,
        topic="Earnings",
        topic_prob=0.9,
        sentiment="bearish",
        sentiment_probs={"bearish": 0.8, "bullish": 0.1, "neutral": 0.1},
        score=-0.7,
        model_version="m",
        record_ms=1_000,
        scored_ms=1_000 + latency_ms,
        inference_ms=3.0,
    )


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([float(i) for i in range(101)], 50) == 50.0
    assert percentile([float(i) for i in range(101)], 99) == 99.0


def test_duplicates_count_once_and_summary_has_every_field() -> None:
    stats = LiveStats()
    for i in range(10):
        stats.on_scored(_scored(i, latency_ms=10 * (i + 1)))
    stats.on_scored(_scored(3, latency_ms=9_999))  # at-least-once duplicate
    stats.on_dead_letter("invalid_json")
    summary = stats.summary()
    assert summary["scored"] == 10
    assert summary["dead_lettered"] == 1
    assert summary["p99_latency_ms"] == 100.0
    assert set(summary) == {
        "posts_in",
        "scored",
        "dead_lettered",
        "alerts_fired",
        "alerts_delivered",
        "alerts_joined_incidents",
        "notifications_firing",
        "notifications_resolved",
        "notifications",
        "delivered",
        "p50_latency_ms",
        "p99_latency_ms",
    }


def test_render_shows_topics_entities_and_alerts() -> None:
    stats = LiveStats()
    stats.on_window(WindowStat("topic", "Earnings", "w", 0, 60_000, 42, -0.3, 0.6))
    stats.on_window(WindowStat("entity", "$NVDA", "w", 0, 60_000, 77, -0.8, 0.9))
    stats.on_alert_delivered({"status": "firing", "key": "$NVDA", "signal": "negative_share"})
    console = Console(width=120, record=True)
    console.print(render(stats))
    text = console.export_text()
    assert "Earnings" in text and "$NVDA" in text and "firing" in text


def test_summary_lists_delivered_alerts_in_order() -> None:
    stats = LiveStats()
    stats.on_alert_delivered({"status": "firing", "kind": "entity", "key": "$NVDA", "signal": "volume"})
    stats.on_alert_delivered(  # the generic webhook payload: one notification, a group of alerts
        {
            "type": "newswatch.alerts",
            "status": "resolved",
            "alerts": [
                {"status": "resolved", "kind": "topic", "key": "Macro", "signal": "mean"},
                {"status": "resolved", "kind": "source", "key": "wire", "signal": "mean"},
            ],
        }
    )
    assert stats.summary()["delivered"] == [
        "firing entity $NVDA volume",
        "resolved topic Macro mean",
        "resolved source wire mean",
    ]


async def test_receiver_is_a_real_http_server() -> None:
    stats = LiveStats()
    receiver = WebhookReceiver(stats)
    await receiver.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(receiver.url, json=_FIRING) as resp:
                assert resp.status == 200
            async with session.post(receiver.url, data=b"not json") as resp:
                assert resp.status == 400
    finally:
        await receiver.stop()
    assert receiver.received == [_FIRING]
    assert stats.alerts_delivered == 1 and stats.summary()["notifications_firing"] == 1


_FIRING = {
    "id": "msg_1",
    "status": "firing",
    "alerts": [{"status": "firing", "fingerprint": "f1", "episode_start_ms": 10, "key": "$NVDA"}],
}


def test_notifications_are_counted_once_and_account_for_incident_members() -> None:
    """A retried webhook-id counts once; a resolution accounts for members that joined after the page."""
    stats = LiveStats()
    stats.on_alert_event({"status": "firing"})
    stats.on_alert_event({"status": "firing"})
    stats.on_alert_event({"status": "resolved"})
    stats.on_alert_delivered(_FIRING)
    stats.on_alert_delivered(_FIRING)  # a retry of the same notification
    assert stats.alerts_delivered == 1 < stats.alerts_fired == 2
    stats.on_incident(["f9-1-firing"], ["f9-1-firing", "f2-20-firing"])  # its page was not delivered
    assert stats.alerts_delivered == 1
    stats.on_incident(["f1-10-firing"], ["f1-10-firing", "f2-20-firing"])  # f2 joined after the page
    assert stats.alerts_delivered == 2 and stats.joined == 1
    resolution = {
        "id": "msg_2",
        "status": "resolved",
        "title": "[RESOLVED] incident $NVDA: 2 alerts, 1 related key (warning)",
        "incident": {"lead": {"key": "$NVDA"}, "also_moved": [{"key": "Tech"}]},
        "alerts": [
            {"status": "resolved", "fingerprint": "f1", "episode_start_ms": 10, "key": "$NVDA"},
            {"status": "resolved", "fingerprint": "f2", "episode_start_ms": 20, "key": "Tech"},
        ],
    }
    stats.on_alert_delivered(resolution)
    summary = stats.summary()
    assert summary["alerts_delivered"] == summary["alerts_fired"] == 2
    assert (summary["notifications_firing"], summary["notifications_resolved"]) == (1, 1)
    assert summary["notifications"][1]["lead"] == "$NVDA"
    assert summary["notifications"][1]["also_moved"] == ["Tech"]
