"""The demo's live terminal view and its local webhook receiver.

:class:`LiveStats` folds the records of the scored, windows and dead-letter topics
into what the terminal shows; :func:`render` draws it with rich; :class:`WebhookReceiver`
is a real HTTP server on loopback that records the alerts the notifier delivers.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from newswatch.io.http import serve
from newswatch.io.schemas import ScoredPost, WindowStat
from newswatch.lifecycle import Service

__all__ = ["LiveStats", "WebhookReceiver", "percentile", "render"]

#: Delivered alerts listed by name in the ``--no-ui`` summary (the count has them all).
MAX_LISTED = 50
#: Alerts of one notification described in its summary entry.
MAX_SEEN = 10


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def _seen(alert: dict[str, Any]) -> str:
    """``"volume entity $NVDA: 103 vs 33.0 (score 1.00)"``: one alert of a notification, in brief."""
    base = alert.get("baseline")
    score = alert.get("score")
    return (
        f"{alert.get('signal', '?')} {alert.get('kind', '?')} {alert.get('key', '?')}: "
        f"{alert.get('observed', '?')} vs {'?' if base is None else round(float(base), 1)}"
        + ("" if score is None else f" (score {float(score):.2f})")
    )


@dataclass
class LiveStats:
    """Running totals and latest windows, fed from the pipeline's topics."""

    posts_in: int = 0
    malformed_in: int = 0  # of posts_in, sent malformed on purpose (demo)
    scored: int = 0
    dead_lettered: int = 0
    scored_ids: set[str] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    windows: dict[tuple[str, str], WindowStat] = field(default_factory=dict)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=12))
    alerts_fired: int = 0
    alert_events: int = 0  # firing and resolved transitions on the alerts topic
    delivered: list[str] = field(default_factory=list)  # "status kind key signal", first MAX_LISTED
    notifications: list[dict[str, Any]] = field(default_factory=list)  # one per webhook-id
    covered: set[str] = field(default_factory=set)  # firing idempotency keys a notification accounts for
    joined: int = 0  # of those, alerts accounted for only as members of a notified incident
    window_name: str | None = None

    def on_scored(self, post: ScoredPost) -> None:
        """Count a scored post once per id and record its publish→scored latency."""
        if post.post.id in self.scored_ids:
            return
        self.scored_ids.add(post.post.id)
        self.scored += 1
        self.latencies_ms.append(max(0.0, float(post.scored_ms - post.record_ms)))

    def on_window(self, stat: WindowStat) -> None:
        """Keep the newest window of the displayed kind per (kind, key)."""
        if self.window_name is not None and stat.window != self.window_name:
            return
        current = self.windows.get((stat.kind, stat.key))
        if current is None or stat.end_ms >= current.end_ms:
            self.windows[(stat.kind, stat.key)] = stat

    def on_dead_letter(self, reason: str) -> None:
        """Count one dead-lettered message."""
        self.dead_lettered += 1
        self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + 1

    def on_alert_fired(self) -> None:
        """Count an alert event written to the alerts topic with status firing."""
        self.alerts_fired += 1

    def on_alert_event(self, event: dict[str, Any]) -> None:
        """Count an alert event written to the alerts topic (firing ones also as fired)."""
        self.alert_events += 1
        if event.get("status") == "firing":
            self.on_alert_fired()

    @property
    def alerts_delivered(self) -> int:
        """Firing alerts accounted for by a delivered notification.

        An alert is accounted for when a firing notification lists it, when a resolution lists
        its resolved transition, or when it joined an incident whose notification was delivered
        (:meth:`on_incident`: by design it gets no notification of its own).
        """
        return len(self.covered)

    def on_incident(self, paged: Iterable[str], members: Iterable[str]) -> None:
        """An open incident of the notifier: if its firing notification was delivered, its members are."""
        if self.covered.isdisjoint(paged):
            return
        new = set(members) - self.covered
        self.joined += len(new)
        self.covered |= new

    def on_alert_delivered(self, payload: dict[str, Any]) -> None:
        """Record a notification the webhook receiver got (a retry with a known id counts once)."""
        nid = payload.get("id")
        if nid is not None and any(n["id"] == nid for n in self.notifications):
            return
        self.alerts.appendleft(payload)
        alerts = payload.get("alerts", [payload])  # a notification groups alerts
        incident = payload.get("incident") or {}
        self.notifications.append(
            {
                "id": nid,
                "status": payload.get("status"),
                "title": payload.get("title"),
                "alerts": len(alerts),
                "lead": (incident.get("lead") or {}).get("key"),
                "also_moved": [a.get("key") for a in incident.get("also_moved") or ()],
                # What each alert saw, so a reader can judge the page.
                "seen": [_seen(a) for a in alerts[:MAX_SEEN]],
            }
        )
        for alert in alerts:
            if {"fingerprint", "episode_start_ms"} <= alert.keys():
                self.covered.add(f"{alert['fingerprint']}-{alert['episode_start_ms']}-firing")
            if len(self.delivered) < MAX_LISTED:
                fields = (alert.get(k, payload.get(k, "?")) for k in ("status", "kind", "key", "signal"))
                self.delivered.append(" ".join(map(str, fields)))

    def summary(self) -> dict[str, Any]:
        """The one-line JSON summary of ``newswatch demo --no-ui``."""
        return {
            "posts_in": self.posts_in,
            "scored": self.scored,
            "dead_lettered": self.dead_lettered,
            "alerts_fired": self.alerts_fired,
            "alerts_delivered": self.alerts_delivered,
            "alerts_joined_incidents": self.joined,
            "notifications_firing": sum(n["status"] == "firing" for n in self.notifications),
            "notifications_resolved": sum(n["status"] == "resolved" for n in self.notifications),
            "notifications": self.notifications[:MAX_LISTED],
            "delivered": list(self.delivered),
            "p50_latency_ms": round(percentile(self.latencies_ms, 50), 1),
            "p99_latency_ms": round(percentile(self.latencies_ms, 99), 1),
        }


def _sentiment_cell(score: float) -> Text:
    style = "red" if score < -0.15 else "green" if score > 0.15 else "white"
    return Text(f"{score:+.2f}", style=style)


def _window_table(stats: LiveStats, kind: str, title: str, limit: int) -> Table:
    table = Table(title=title, expand=True, title_justify="left")
    table.add_column(kind)
    table.add_column("posts", justify="right")
    table.add_column("sentiment", justify="right")
    table.add_column("bearish", justify="right")
    rows = sorted(
        (s for (k, _), s in stats.windows.items() if k == kind), key=lambda s: s.count, reverse=True
    )[:limit]
    for s in rows:
        neg_style = "bold red" if s.negative_share >= 0.5 else ""
        table.add_row(
            s.key,
            str(s.count),
            _sentiment_cell(s.mean_score),
            Text(f"{s.negative_share:.0%}", style=neg_style),
        )
    return table


def _describe_alert(payload: dict[str, Any]) -> str:
    alert = payload.get("alert", payload)
    parts = [
        str(alert.get(k))
        for k in ("status", "severity", "kind", "key", "signal", "summary", "title")
        if alert.get(k) is not None
    ]
    return " · ".join(parts) or json.dumps(alert)[:160]


def render(stats: LiveStats) -> RenderableType:
    """The demo's terminal screen."""
    s = stats.summary()
    header = Text.assemble(
        ("newswatch demo  ", "bold"),
        f"in {s['posts_in']}  scored {s['scored']}  dead-lettered {s['dead_lettered']}  ",
        f"latency p50 {s['p50_latency_ms']:.0f} ms p99 {s['p99_latency_ms']:.0f} ms  ",
        (f"alerts fired {s['alerts_fired']} delivered {s['alerts_delivered']}  ", "bold yellow"),
        (f"notifications {len(stats.notifications)}", "bold yellow"),
    )
    alerts = Table(title="Alerts (newest first)", expand=True, title_justify="left")
    alerts.add_column("delivered alert")
    for payload in stats.alerts:
        style = "bold red" if "firing" in json.dumps(payload) else "green"
        alerts.add_row(Text(_describe_alert(payload), style=style))
    if not stats.alerts:
        alerts.add_row(Text("none yet", style="dim"))
    return Group(
        header,
        _window_table(stats, "topic", "Per topic (latest window)", 10),
        _window_table(stats, "entity", "Per ticker (latest window, busiest)", 8),
        alerts,
    )


class WebhookReceiver(Service):
    """A real HTTP server on loopback that accepts alert webhooks (any JSON POST)."""

    def __init__(self, stats: LiveStats | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.stats = stats
        self.host = host
        self.port = port
        self.received: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The URL to configure as a webhook."""
        return f"http://{self.host}:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        self.received.append(payload)
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        if self.stats is not None:
            self.stats.on_alert_delivered(payload)
        return web.json_response({"ok": True})

    async def start(self) -> None:
        """Bind and serve; ``port=0`` picks a free port."""
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner, self.port = await serve(app, self.host, self.port)

    async def stop(self) -> None:
        """Stop serving; a no-op when stopped."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _holds_resources(self) -> bool:
        return self._runner is not None
