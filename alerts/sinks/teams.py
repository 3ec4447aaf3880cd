"""Microsoft Teams (Workflows / incoming webhook): an Adaptive Card message.

Adaptive Card ``TextBlock``s render a markdown subset (links among it), so every text from
posts is neutralised (:func:`~newswatch.alerts.sinks._text.neutral`): no markdown or HTML
link, no mention, URLs defanged. Teams documents no per-field limit but a message of at
most about 28 KB; the fields are cut (``*_CHARS``) so that even ten alerts with the longest
keys and examples stay under :data:`MAX_MESSAGE_BYTES`.
"""

from __future__ import annotations

import json
from typing import Any

from newswatch.alerts.sinks._text import (
    MAX_LISTED,
    alert_line,
    also_moved_lines,
    cut,
    example_lines,
    neutral,
    post_lines,
    safe_url,
)
from newswatch.alerts.sinks.base import Notification, Sink

__all__ = ["TeamsSink", "teams_payload"]

#: Teams' documented message size limit (about 28 KB) with room for the JSON around the card.
MAX_MESSAGE_BYTES = 24_000
TITLE_CHARS = 200
SUMMARY_CHARS = 2_000
LINE_CHARS = 1_000
URL_CHARS = 2_000


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
            "text": cut(n.title(), TITLE_CHARS),
            "color": "Attention" if n.status == "firing" else "Good",
        }
    ]
    inc = n.incident
    if inc is not None:
        summary = neutral(inc.summary, SUMMARY_CHARS)
        body.append({"type": "TextBlock", "text": summary, "wrap": True, "weight": "Bolder"})
        also = also_moved_lines(inc)
        if also:
            text = cut("Also moved: " + "; ".join(also), SUMMARY_CHARS)
            body.append({"type": "TextBlock", "text": text, "wrap": True})
    facts = [{"title": a.severity, "value": cut(alert_line(a), LINE_CHARS)} for a in n.alerts[:MAX_LISTED]]
    body.append({"type": "FactSet", "facts": facts})
    if len(n.alerts) > MAX_LISTED:
        body.append({"type": "TextBlock", "text": f"…and {len(n.alerts) - MAX_LISTED} more", "wrap": True})
    for line in post_lines(inc.evidence) if inc is not None else example_lines(n.alerts[0]):
        text = cut(line, LINE_CHARS)
        body.append({"type": "TextBlock", "text": text, "wrap": True, "isSubtle": True, "size": "Small"})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    url = safe_url(n.alerts[0].dashboard_url, URL_CHARS)
    if url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open dashboard", "url": url}]
    message = {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }
    # Wide characters (4 UTF-8 bytes each) could still take the card over Teams' size limit:
    # drop example posts from the end, then shorten every text, until it fits.
    while _size(message) > MAX_MESSAGE_BYTES and body[-1].get("isSubtle"):
        body.pop()
    for _ in range(8):  # each round halves every long text; a few rounds always suffice
        if _size(message) <= MAX_MESSAGE_BYTES:
            break
        for block in body:
            if block["type"] == "TextBlock" and len(block["text"]) > 80:
                block["text"] = cut(block["text"], len(block["text"]) // 2)
        for fact in facts:
            fact["value"] = cut(fact["value"], max(80, len(fact["value"]) // 2))
    return message


def _size(message: dict[str, Any]) -> int:
    return len(json.dumps(message, ensure_ascii=False).encode())


class TeamsSink(Sink):
    """Posts :func:`teams_payload` to a Teams workflow webhook URL (the URL is the secret)."""

    sink_type = "teams"

    async def send(self, notification: Notification) -> int:
        """POST the Adaptive Card message."""
        body = json.dumps(teams_payload(notification), ensure_ascii=False).encode()
        status, _ = await self._post(self._url, body, {"Content-Type": "application/json"})
        return status
