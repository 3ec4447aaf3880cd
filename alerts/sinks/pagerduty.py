"""PagerDuty Events API v2: trigger and resolve with ``dedup_key`` = the alert fingerprint."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.exceptions import SinkConfigError
from newswatch.alerts.settings import SinkSettings
from newswatch.alerts.sinks._text import alert_line
from newswatch.alerts.sinks.base import Notification, Sink, load_secret

__all__ = ["PagerDutySink", "pagerduty_event"]

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


def pagerduty_event(a: AlertEvent, routing_key: str, group: str) -> dict[str, Any]:
    """One Events v2 event: ``trigger`` for firing, ``resolve`` for resolved."""
    if a.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": a.fingerprint}
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": a.fingerprint,
        "payload": {
            "summary": f"newswatch: {alert_line(a)}"[:1024],
            "source": "newswatch",
            "severity": "critical" if a.severity == "critical" else "warning",
            "timestamp": datetime.fromtimestamp(a.episode_start_ms / 1000, UTC).isoformat(),
            "component": f"{a.kind}:{a.key}",
            "group": group,
            "class": a.signal,
            "custom_details": {
                "observed": a.observed,
                "baseline": a.baseline,
                "score": a.score,
                "support": a.support,
                "window": a.window,
                "rule": a.rule,
                "examples": list(a.examples[:3]),
            },
        },
        "client": "newswatch",
    }
    if a.dashboard_url:
        event["client_url"] = a.dashboard_url
        event["links"] = [{"href": a.dashboard_url, "text": "newswatch dashboard"}]
    return event


class PagerDutySink(Sink):
    """Sends one Events v2 event per alert; PagerDuty groups them into incidents by ``dedup_key``.

    The routing key is the sink's ``secret``; the URL defaults to PagerDuty's endpoint.
    Re-sending an event is harmless (PagerDuty deduplicates by ``dedup_key``).
    """

    sink_type = "pagerduty"

    def __init__(self, settings: SinkSettings, timeout_s: float = 5.0) -> None:
        super().__init__(settings, timeout_s)
        key = load_secret(settings.secret, settings.secret_file, "routing key")
        if not key:
            raise SinkConfigError(
                f"sink {self.name!r} (pagerduty) needs the routing key as secret or secret_file"
            )
        self._routing_key = key

    def default_url(self) -> str | None:
        """PagerDuty's public Events v2 endpoint."""
        return EVENTS_URL

    async def send(self, notification: Notification) -> int:
        """POST one event per member alert."""
        status = 0
        for a in notification.alerts:
            body = json.dumps(pagerduty_event(a, self._routing_key, notification.group)).encode()
            status, _ = await self._post(self._url, body, {"Content-Type": "application/json"})
        return status
