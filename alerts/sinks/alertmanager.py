"""Prometheus Alertmanager: ``POST /api/v2/alerts`` so its routing, silences and inhibition apply."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.sinks._text import alert_line
from newswatch.alerts.sinks.base import Notification, Sink

__all__ = ["AlertmanagerSink", "alertmanager_alerts"]

#: A firing alert is sent once, so it carries an explicit end far enough ahead; the resolved
#: transition replaces it with the real end.
FIRING_TTL = timedelta(hours=24)


def _iso(ms: int | float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def alertmanager_alerts(n: Notification) -> list[dict[str, Any]]:
    """The ``postableAlerts`` body: labels identify the alert, annotations describe it.

    Alerts of an incident keep their own labels (those a standalone notification would
    give them, so firing and resolved transitions match); the incident is in annotations
    (``incident``, ``incident_lead``, ``incident_summary``, ``incident_also_moved``,
    ``incident_evidence``), and all its alerts go in one request.
    """
    out = []
    inc = n.incident
    for a in n.alerts:
        group = inc.member_groups.get(a.fingerprint, n.group) if inc is not None else n.group
        annotations = {
            "summary": alert_line(a),
            "observed": f"{a.observed:g}",
            "baseline": "" if a.baseline is None else f"{a.baseline:g}",
            "score": f"{a.score:.3f}",
            "dashboard": a.dashboard_url,
            "examples": json.dumps(list(a.examples[:3]), ensure_ascii=False)[:4000],
        }
        if inc is not None:
            annotations.update(
                incident=inc.id,
                incident_lead=f"{inc.lead_kind} {inc.lead_key}",
                incident_summary=inc.summary[:4000],
                incident_also_moved=json.dumps([dict(x) for x in inc.also_moved], ensure_ascii=False)[:4000],
                incident_evidence=json.dumps([dict(e) for e in inc.evidence], ensure_ascii=False)[:4000],
            )
        alert: dict[str, Any] = {
            "labels": _labels(a, group),
            "annotations": annotations,
            "startsAt": _iso(a.episode_start_ms),
            "generatorURL": a.dashboard_url or "http://newswatch.invalid/",
        }
        if a.status == "resolved":
            alert["endsAt"] = _iso(a.end_ms)
        else:
            alert["endsAt"] = _iso(max(a.end_ms, n.created_ms) + FIRING_TTL.total_seconds() * 1000)
        out.append(alert)
    return out


def _labels(a: AlertEvent, group: str) -> dict[str, str]:
    labels = {
        "alertname": "NewswatchAnomaly",
        "fingerprint": a.fingerprint,
        "kind": a.kind,
        "key": a.key,
        "signal": a.signal,
        "window": a.window,
        "rule": a.rule,
        "severity": a.severity,
        "group": group,
    }
    return labels


class AlertmanagerSink(Sink):
    """Posts to ``<url>/api/v2/alerts`` (``url`` is Alertmanager's base URL)."""

    sink_type = "alertmanager"

    async def send(self, notification: Notification) -> int:
        """POST every member alert in one request."""
        url = self._url.rstrip("/")
        if not url.endswith("/api/v2/alerts"):
            url += "/api/v2/alerts"
        body = json.dumps(alertmanager_alerts(notification), ensure_ascii=False).encode()
        status, _ = await self._post(url, body, {"Content-Type": "application/json"})
        return status
