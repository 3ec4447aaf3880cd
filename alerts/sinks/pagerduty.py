"""PagerDuty Events API v2: trigger and resolve with ``dedup_key`` = the alert fingerprint.

Texts from posts are neutralised (:func:`~newswatch.alerts.sinks._text.neutral`) and cut:
``summary`` to PagerDuty's documented 1,024 characters, ``component``, ``group`` and
``class`` (no documented limit) to :data:`FIELD_CHARS`, example texts to :data:`POST_CHARS`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.exceptions import SinkConfigError
from newswatch.alerts.sinks._text import (
    MAX_LISTED,
    alert_line,
    cut,
    display_key,
    neutral,
    safe_also_moved,
    safe_posts,
    safe_url,
)
from newswatch.alerts.sinks.base import Notification, Sink, load_secret
from newswatch.settings.alerts import SinkSettings

__all__ = ["PagerDutySink", "pagerduty_event", "pagerduty_incident_event"]

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
#: PagerDuty's documented limit of ``payload.summary``.
SUMMARY_CHARS = 1024
#: Our cut of ``component``, ``group`` and ``class`` (PagerDuty documents none; 255 like ``dedup_key``).
FIELD_CHARS = 255
#: Example post texts in ``custom_details``.
POST_CHARS = 1000
#: The dashboard link (``client_url``, ``links``); a longer one is left out.
URL_CHARS = 2000


def pagerduty_event(a: AlertEvent, routing_key: str, group: str) -> dict[str, Any]:
    """One Events v2 event: ``trigger`` for firing, ``resolve`` for resolved."""
    if a.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": a.fingerprint}
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": a.fingerprint,
        "payload": {
            "summary": cut(f"newswatch: {alert_line(a)}", SUMMARY_CHARS),
            "source": "newswatch",
            "severity": "critical" if a.severity == "critical" else "warning",
            "timestamp": datetime.fromtimestamp(a.episode_start_ms / 1000, UTC).isoformat(),
            "component": cut(f"{a.kind}:{neutral(a.key)}", FIELD_CHARS),
            "group": neutral(group, FIELD_CHARS),
            "class": neutral(a.signal, FIELD_CHARS),
            "custom_details": {
                "observed": a.observed,
                "baseline": a.baseline,
                "score": a.score,
                "support": a.support,
                "window": a.window,
                "rule": a.rule,
                "examples": safe_posts(a.examples[:3], POST_CHARS),
            },
        },
        "client": "newswatch",
    }
    url = safe_url(a.dashboard_url, URL_CHARS)
    if url:
        event["client_url"] = url
        event["links"] = [{"href": url, "text": "newswatch dashboard"}]
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
            "summary": neutral(f"newswatch: {inc.summary}", SUMMARY_CHARS),
            "source": "newswatch",
            "severity": n.severity,
            "timestamp": datetime.fromtimestamp(inc.start_ms / 1000, UTC).isoformat(),
            "component": cut(f"{neutral(inc.lead_kind)}:{neutral(inc.lead_key)}", FIELD_CHARS),
            "group": "incident",
            "class": neutral(",".join(inc.lead_signals), FIELD_CHARS),
            "custom_details": {
                "incident": inc.id,
                "lead": {
                    "kind": neutral(inc.lead_kind, 40),
                    "key": display_key(inc.lead_key),
                    "signals": [neutral(x, 40) for x in inc.lead_signals],
                },
                "also_moved": safe_also_moved(inc),
                "alerts": [alert_line(a) for a in n.alerts[: 10 * MAX_LISTED]],
                "evidence": safe_posts(inc.evidence, POST_CHARS),
            },
        },
        "client": "newswatch",
    }
    url = safe_url(lead.dashboard_url, URL_CHARS)
    if url:
        event["client_url"] = url
        event["links"] = [{"href": url, "text": "newswatch dashboard"}]
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
