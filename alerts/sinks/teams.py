"""Microsoft Teams (Workflows / incoming webhook): an Adaptive Card message."""

from __future__ import annotations

import json
from typing import Any

from newswatch.alerts.sinks._text import MAX_LISTED, alert_line, also_moved_lines, example_lines, post_lines
from newswatch.alerts.sinks.base import Notification, Sink

__all__ = ["TeamsSink", "teams_payload"]


def teams_payload(n: Notification) -> dict[str, Any]:
    """``{"type": "message", "attachments": [Adaptive Card 1.4]}`` as Teams webhooks accept it.

    An incident notification adds its summary, the keys that also moved and its evidence posts.
    """
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "size": "Large",
            "weight": "Bolder",
            "wrap": True,
            "text": n.title(),
            "color": "Attention" if n.status == "firing" else "Good",
        }
    ]
    inc = n.incident
    if inc is not None:
        body.append({"type": "TextBlock", "text": inc.summary, "wrap": True, "weight": "Bolder"})
        also = also_moved_lines(inc)
        if also:
            body.append({"type": "TextBlock", "text": "Also moved: " + "; ".join(also), "wrap": True})
    facts = [{"title": a.severity, "value": alert_line(a)} for a in n.alerts[:MAX_LISTED]]
    body.append({"type": "FactSet", "facts": facts})
    if len(n.alerts) > MAX_LISTED:
        body.append({"type": "TextBlock", "text": f"…and {len(n.alerts) - MAX_LISTED} more", "wrap": True})
    for line in post_lines(inc.evidence) if inc is not None else example_lines(n.alerts[0]):
        body.append({"type": "TextBlock", "text": line, "wrap": True, "isSubtle": True, "size": "Small"})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    url = n.alerts[0].dashboard_url
    if url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open dashboard", "url": url}]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


class TeamsSink(Sink):
    """Posts :func:`teams_payload` to a Teams workflow webhook URL (the URL is the secret)."""

    sink_type = "teams"

    async def send(self, notification: Notification) -> int:
        """POST the Adaptive Card message."""
        body = json.dumps(teams_payload(notification), ensure_ascii=False).encode()
        status, _ = await self._post(self._url, body, {"Content-Type": "application/json"})
        return status
