"""Slack incoming webhook: a Block Kit message.

Post content is neutralised (:func:`~newswatch.alerts.sinks._text.neutral`) and then
escaped for mrkdwn (``&``, ``<``, ``>``), in the top-level ``text`` as in the blocks;
every field is cut to Slack's documented limit (the ``*_CHARS`` constants).
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

__all__ = ["SlackSink", "slack_payload"]

#: Slack's documented limits: message ``text`` (longer is truncated by Slack), header
#: block text, section/context text, button text and URL, blocks per message.
TEXT_CHARS = 40_000
HEADER_CHARS = 150
SECTION_CHARS = 3_000
BUTTON_TEXT_CHARS = 75
URL_CHARS = 3_000
MAX_BLOCKS = 50


def _mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str, limit: int = SECTION_CHARS) -> str:
    """Neutralised, escaped and cut (escaping before cutting, so no entity is split)."""
    escaped = _mrkdwn_escape(neutral(text))
    if len(escaped) <= limit:
        return escaped
    head = escaped[: limit - 1]
    amp = head.rfind("&")
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    return head + "…"


def slack_payload(n: Notification) -> dict[str, Any]:
    """Block Kit message: header, one section per alert (at most 10), examples, dashboard button.

    An incident notification starts with its summary and the keys that also moved, and its
    examples are the incident's evidence posts.
    """
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": cut(n.title(), HEADER_CHARS), "emoji": False},
        }
    ]
    inc = n.incident
    if inc is not None:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(inc.summary)}})
        also = also_moved_lines(inc)
        if also:
            text = "*Also moved:*\n" + "\n".join(f"• {_mrkdwn_escape(line)}" for line in also)
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut_lines(text)}]})
    for a in n.alerts[:MAX_LISTED]:
        icon = ":red_circle:" if a.status == "firing" else ":large_green_circle:"
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"{icon} *{a.severity}* {_mrkdwn(alert_line(a), SECTION_CHARS - 40)}",
                },
            }
        )
    if len(n.alerts) > MAX_LISTED:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"…and {len(n.alerts) - MAX_LISTED} more"}],
            }
        )
    examples = post_lines(inc.evidence) if inc is not None else example_lines(n.alerts[0])
    if examples:
        text = "\n".join(f"• {_mrkdwn_escape(e)}" for e in examples)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut_lines(text)}]})
    url = safe_url(n.alerts[0].dashboard_url, URL_CHARS)
    if url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open dashboard"},
                        "url": url,
                    }
                ],
            }
        )
    return {"text": _mrkdwn(n.title(), TEXT_CHARS), "blocks": blocks[:MAX_BLOCKS]}


def _cut_lines(text: str, limit: int = SECTION_CHARS) -> str:
    """Whole lines of already escaped ``text`` up to ``limit`` characters (no entity split)."""
    if len(text) <= limit:
        return text
    out = ""
    for line in text.split("\n"):
        if len(out) + len(line) + 2 > limit:
            break
        out += ("\n" if out else "") + line
    return out + "\n…"


class SlackSink(Sink):
    """Posts :func:`slack_payload` to a Slack incoming-webhook URL (the URL is the secret)."""

    sink_type = "slack"

    async def send(self, notification: Notification) -> int:
        """POST the Block Kit message."""
        body = json.dumps(slack_payload(notification), ensure_ascii=False).encode()
        status, _ = await self._post(self._url, body, {"Content-Type": "application/json"})
        return status
