"""``newswatch alerts test --sink NAME``: a synthetic alert through one real sink."""

from __future__ import annotations

import time

from newswatch.alerts.delivery import Outcome, deliver
from newswatch.alerts.events import AlertEvent, fingerprint_of
from newswatch.alerts.exceptions import SinkConfigError
from newswatch.alerts.notify import configured_sinks
from newswatch.alerts.sinks import Notification
from newswatch.settings.alerts import NotifySettings

__all__ = ["send_test_alert", "test_event"]


def test_event(resolved: bool = False, now_ms: int | None = None) -> AlertEvent:
    """A recognisable synthetic alert (key ``$TEST``)."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    start = now - now % 60_000
    return AlertEvent(
        fingerprint=fingerprint_of("entity", "$TEST", "tumbling_60000", "volume", "test"),
        status="resolved" if resolved else "firing",
        severity="warning",
        kind="entity",
        key="$TEST",
        signal="volume",
        rule="test",
        window="tumbling_60000",
        start_ms=start,
        end_ms=start + 60_000,
        episode_start_ms=start,
        observed=120.0,
        baseline=14.0,
        score=0.9,
        support=120,
        examples=(
            {"id": "test-1", "text": "newswatch test alert: please ignore", "url": None, "score": -0.9},
        ),
        dashboard_url="",
    )


async def send_test_alert(settings: NotifySettings, sink_name: str, resolved: bool = False) -> Outcome:
    """Deliver :func:`test_event` to ``sink_name`` with the configured retries (at most 3 attempts)."""
    sinks = {s.name: s for s in configured_sinks(settings)}
    if sink_name not in sinks:
        raise SinkConfigError(f"no sink named {sink_name!r}; configured: {', '.join(sinks) or 'none'}")
    sink = sinks[sink_name]
    quick = settings.model_copy(update={"max_attempts": min(settings.max_attempts, 3)})
    note = Notification(alerts=(test_event(resolved),), group="test", test=True)
    async with sink:
        return await deliver(sink, note, quick)
