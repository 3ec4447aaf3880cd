"""Plain-text pieces shared by the chat sinks (Slack, Teams)."""

from __future__ import annotations

from newswatch.alerts.events import AlertEvent

MAX_LISTED = 10


def alert_line(a: AlertEvent) -> str:
    """``volume entity $NVDA: 120 vs 14 (score 0.91)``."""
    base = "?" if a.baseline is None else f"{a.baseline:.3g}"
    return f"{a.signal} {a.kind} {a.key}: {a.observed:.3g} vs {base} (score {a.score:.2f}, {a.support} posts)"


def example_lines(a: AlertEvent) -> list[str]:
    """Up to three example posts as ``score text (url)``."""
    out = []
    for ex in a.examples[:3]:
        text = str(ex.get("text", ""))[:200]
        url = ex.get("url")
        score = ex.get("score")
        head = f"{float(score):+.2f} " if isinstance(score, int | float) else ""
        out.append(f"{head}{text}" + (f" ({url})" if url else ""))
    return out
