"""Slack incoming webhook: a Block Kit message."""

from __future__ import annotations

import json
from typing import Any

from newswatch.alerts.sinks._text import MAX_LISTED, alert_line, also_moved_lines, example_lines, post_lines
from newswatch.alerts.sinks.base import Notification, Sink

__all__ = ["SlackSink", "slack_payload"]


def _mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(n: Notification) -> dict[str, Any]:
    """Block Kit message: header, one section per alert (at most 10), examples, dashboard button.

    An incident notification starts with its summary and the keys that also moved, and its
    examples are the incident's evidence posts.
    """
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": n.title()[:150], "emoji": False}}
    ]
    inc = n.incident
    if inc is not None:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn_escape(inc.summary)[:3000]}}
        )
        also = also_moved_lines(inc)
        if also:
            text = "*Also moved:*\n" + "\n".join(f"• {_mrkdwn_escape(line)}" for line in also)
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]})
    for a in n.alerts[:MAX_LISTED]:
        icon = ":red_circle:" if a.status == "firing" else ":large_green_circle:"
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"{icon} *{a.severity}* {_mrkdwn_escape(alert_line(a))}"[:3000],
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
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]})
    url = n.alerts[0].dashboard_url
    if url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open dashboard"},
                        "url": url[:3000],
                    }
                ],
            }
        )
    return {"text": n.title(), "blocks": blocks[:50]}


class SlackSink(Sink):
    """Posts :func:`slack_payload` to a Slack incoming-webhook URL (the URL is the secret)."""

    sink_type = "slack"

    async def send(self, notification: Notification) -> int:
        """POST the Block Kit message."""
        body = json.dumps(slack_payload(notification), ensure_ascii=False).encode()
        status, _ = await self._post(self._url, body, {"Content-Type": "application/json"})
        return status
