"""Plain-text pieces shared by the chat sinks (Slack, Teams)."""

from __future__ import annotations

from typing import Any

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.sinks.base import IncidentSummary

MAX_LISTED = 10


def alert_line(a: AlertEvent) -> str:
    """``volume entity $NVDA: 120 vs 14 (score 0.91)``."""
    base = "?" if a.baseline is None else f"{a.baseline:.3g}"
    return f"{a.signal} {a.kind} {a.key}: {a.observed:.3g} vs {base} (score {a.score:.2f}, {a.support} posts)"


def example_lines(a: AlertEvent) -> list[str]:
    """Up to three example posts as ``score text (url)``."""
    return post_lines(a.examples[:3])


def post_lines(posts: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[str]:
    """Posts as ``score text (url)``."""
    out = []
    for ex in posts:
        text = str(ex.get("text", ""))[:200]
        url = ex.get("url")
        score = ex.get("score")
        head = f"{float(score):+.2f} " if isinstance(score, int | float) else ""
        out.append(f"{head}{text}" + (f" ({url})" if url else ""))
    return out


def also_moved_lines(inc: IncidentSummary) -> list[str]:
    """``topic Financials (negative_share, volume): 92 % of negative_share explained`` per related key."""
    out = []
    for a in inc.also_moved[:MAX_LISTED]:
        label = {"entity": a["key"], "global": "global"}.get(a["kind"], f"{a['kind']} {a['key']}")
        line = f"{label} ({', '.join(a['signals'])})"
        explained = a.get("explained") or {}
        if explained:
            line += ": " + ", ".join(f"{round(100 * v)} % of {s} explained" for s, v in explained.items())
        out.append(line)
    if len(inc.also_moved) > MAX_LISTED:
        out.append(f"…and {len(inc.also_moved) - MAX_LISTED} more")
    return out
