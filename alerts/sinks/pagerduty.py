"""PagerDuty Events API v2: trigger and resolve with ``dedup_key`` = the alert fingerprint."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.exceptions import SinkConfigError
from newswatch.alerts.sinks._text import alert_line
from newswatch.alerts.sinks.base import Notification, Sink, load_secret
from newswatch.settings.alerts import SinkSettings

__all__ = ["PagerDutySink", "pagerduty_event", "pagerduty_incident_event"]

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


def pagerduty_incident_event(n: Notification, routing_key: str) -> dict[str, Any]:
    """One Events v2 event for an incident notification: ``dedup_key`` = the incident's.

    The incident's ``dedup_key`` is the fingerprint of the alert that opened it, so an
    incident first paged as that single alert is resolved by the incident's resolution.
    """
    inc = n.incident
    assert inc is not None
    if inc.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": inc.dedup_key}
    lead = next((a for a in n.alerts if a.key == inc.lead_key and a.kind == inc.lead_kind), n.alerts[0])
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": inc.dedup_key,
        "payload": {
            "summary": f"newswatch: {inc.summary}"[:1024],
            "source": "newswatch",
            "severity": n.severity,
            "timestamp": datetime.fromtimestamp(inc.start_ms / 1000, UTC).isoformat(),
            "component": f"{inc.lead_kind}:{inc.lead_key}",
            "group": "incident",
            "class": ",".join(inc.lead_signals),
            "custom_details": {
                "incident": inc.id,
                "lead": {"kind": inc.lead_kind, "key": inc.lead_key, "signals": list(inc.lead_signals)},
                "also_moved": [dict(a) for a in inc.also_moved],
                "alerts": [alert_line(a) for a in n.alerts],
                "evidence": [dict(e) for e in inc.evidence],
            },
        },
        "client": "newswatch",
    }
    if lead.dashboard_url:
        event["client_url"] = lead.dashboard_url
        event["links"] = [{"href": lead.dashboard_url, "text": "newswatch dashboard"}]
    return event


class PagerDutySink(Sink):
    """Sends one Events v2 event per alert; PagerDuty groups them into incidents by ``dedup_key``.

    An incident notification is one event (trigger or resolve) for the whole incident.

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
        """POST one event per member alert (one per incident for an incident notification)."""
        if notification.incident is not None:
            body = json.dumps(pagerduty_incident_event(notification, self._routing_key)).encode()
            status, _ = await self._post(self._url, body, {"Content-Type": "application/json"})
            return status
        status = 0
        for a in notification.alerts:
            body = json.dumps(pagerduty_event(a, self._routing_key, notification.group)).encode()
            status, _ = await self._post(self._url, body, {"Content-Type": "application/json"})
        return status
