"""Prometheus Alertmanager: ``POST /api/v2/alerts`` so its routing, silences and inhibition apply.

Alertmanager passes labels and annotations on to its own receivers (Slack, PagerDuty, …)
through templates, so texts from posts are neutralised here as for every chat channel
(:func:`~newswatch.alerts.sinks._text.neutral`). Alertmanager documents no size limit;
label values are cut to :data:`LABEL_CHARS`, annotations to :data:`ANNOTATION_CHARS`
(JSON annotations drop whole items, so they stay valid JSON).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.sinks._text import (
    alert_line,
    cut,
    display_key,
    neutral,
    safe_also_moved,
    safe_posts,
    safe_url,
)
from newswatch.alerts.sinks.base import Notification, Sink

__all__ = ["AlertmanagerSink", "alertmanager_alerts"]

#: A firing alert is sent once, so it carries an explicit end far enough ahead; the resolved
#: transition replaces it with the real end.
FIRING_TTL = timedelta(hours=24)
LABEL_CHARS = 1024
ANNOTATION_CHARS = 4000


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
            "summary": cut(alert_line(a), ANNOTATION_CHARS),
            "observed": f"{a.observed:g}",
            "baseline": "" if a.baseline is None else f"{a.baseline:g}",
            "score": f"{a.score:.3f}",
            "dashboard": _url(a.dashboard_url),
            "examples": _json_within(safe_posts(a.examples[:3], 1000)),
        }
        if inc is not None:
            annotations.update(
                incident=inc.id,
                incident_lead=f"{neutral(inc.lead_kind, 40)} {display_key(inc.lead_key)}",
                incident_summary=neutral(inc.summary, ANNOTATION_CHARS),
                incident_also_moved=_json_within(safe_also_moved(inc)),
                incident_evidence=_json_within(safe_posts(inc.evidence, 1000)),
            )
        alert: dict[str, Any] = {
            "labels": _labels(a, group),
            "annotations": annotations,
            "startsAt": _iso(a.episode_start_ms),
            "generatorURL": _url(a.dashboard_url) or "http://newswatch.invalid/",
        }
        if a.status == "resolved":
            alert["endsAt"] = _iso(a.end_ms)
        else:
            alert["endsAt"] = _iso(max(a.end_ms, n.created_ms) + FIRING_TTL.total_seconds() * 1000)
        out.append(alert)
    return out


def _labels(a: AlertEvent, group: str) -> dict[str, str]:
    """Identity labels; ``fingerprint`` stays exact, so two keys cut alike remain two alerts."""
    labels = {
        "alertname": "NewswatchAnomaly",
        "fingerprint": a.fingerprint,
        "kind": a.kind,
        "key": neutral(a.key, LABEL_CHARS),
        "signal": a.signal,
        "window": a.window,
        "rule": a.rule,
        "severity": a.severity,
        "group": neutral(group, LABEL_CHARS),
    }
    return labels


def _url(url: str) -> str:
    """The dashboard link when it is an http(s) URL that fits an annotation, else empty."""
    return safe_url(url, ANNOTATION_CHARS)


def _json_within(items: list[dict[str, Any]], limit: int = ANNOTATION_CHARS) -> str:
    """``items`` as JSON of at most ``limit`` characters, dropping items from the end."""
    while items:
        text = json.dumps(items, ensure_ascii=False)
        if len(text) <= limit:
            return text
        items = items[:-1]
    return "[]"


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
