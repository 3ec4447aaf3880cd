"""Issue 19, F6: post content injected into on-call channels. Every sink delivers a critical alert
(and an incident) whose key and posts carry mentions, markdown/HTML links and a 3,000-character
key to a real receiver on loopback; what the receiver gets must be inert and within the
channel's documented limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.sinks import Notification, build_sink
from newswatch.alerts.sinks.base import IncidentSummary
from newswatch.settings.alerts import SinkSettings
from tests.support.alerts import make_alert
from tests.support.receivers import Receiver

MENTION = "<!channel>"
PHISH = "[Reset your password](https://evil.example/reset)"
HTML = '<a href="https://evil.example/login">open the runbook</a>'
TEXT = f"{PHISH} @here <@U024BE7LH> {HTML} <!subteam^S0123|oncall> <https://evil.example|dashboard>"
LONG_KEY = "$" + "A" * 2999

#: What must not reach a chat channel: live mentions, links whose target hides behind a label,
#: and clickable URLs from the posts.
FORBIDDEN = (
    "<!channel>",
    "<!here>",
    "<!subteam",
    "<@U024BE7LH>",
    "@here",
    "](https://",
    "<a href",
    "https://evil.example",
    "<https://",
)


def _posts() -> tuple[dict[str, Any], ...]:
    return (
        {"id": "p1", "text": TEXT, "url": "https://news.example.com/1", "score": -0.99},
        {"id": "p2", "text": f"{MENTION} {PHISH}", "url": "javascript:alert(1)", "score": -0.9},
        {"id": "p3", "text": "line one\n\n:red_circle: *critical* forged line", "url": None, "score": -0.8},
    )


def _alert(key: str) -> AlertEvent:
    return make_alert(key=key, severity="critical", examples=_posts())


def _notes() -> list[Notification]:
    """A critical alert keyed by the mention, one with a 3,000-character key, and an incident."""
    lead = _alert(MENTION)
    incident = IncidentSummary(
        id="inc-1",
        status="firing",
        dedup_key=lead.fingerprint,
        lead_kind="entity",
        lead_key=MENTION,
        lead_signals=("volume",),
        summary=f"{MENTION} explains 90 % of the rise in topic {PHISH}; also moved: {LONG_KEY}",
        also_moved=({"kind": "topic", "key": f"<!here> {PHISH}", "signals": ["volume"], "explained": {}},),
        evidence=_posts(),
        start_ms=lead.episode_start_ms,
        end_ms=lead.end_ms,
    )
    return [
        Notification(alerts=(lead,), group="entity"),
        Notification(alerts=(_alert(LONG_KEY),), group="entity"),
        Notification(alerts=(lead, _alert(LONG_KEY)), group="incident", incident=incident),
    ]


def _strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, value) of every string in a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def _hostile(value: str, link: bool = False) -> list[str]:
    """What is wrong with ``value``; a ``link`` (the dashboard URL, key encoded) may be long."""
    found = [f for f in FORBIDDEN if f in value]
    return found + (["the 3,000-character key"] if LONG_KEY[:500] in value and not link else [])


async def _deliver(receiver: Receiver, spec: SinkSettings) -> list[Any]:
    receiver.behaviour = lambda n: 202 if spec.type == "pagerduty" else 200
    sink = build_sink(spec)
    async with sink:
        for note in _notes():
            await sink.send(note)
    return [r.json() for r in receiver.accepted]


async def test_slack_text_and_blocks_are_inert_and_within_limits(receiver: Receiver) -> None:
    bodies = await _deliver(receiver, SinkSettings(name="slack", type="slack", url=receiver.url))
    for body in bodies:
        # Slack renders &lt; &gt; &amp; as < > &: what it would show must be inert too.
        assert {p: h for p, v in _strings(body) if (h := _hostile(_unescape(v)))} == {}
        assert len(body["text"]) <= 40_000 and len(body["text"]) <= 300  # a title, not the key
        assert len(body["blocks"]) <= 50
        for block in body["blocks"]:
            if block["type"] == "header":
                assert len(block["text"]["text"]) <= 150
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= 3000
            for element in block.get("elements", []):
                if element.get("type") == "mrkdwn":
                    assert len(element["text"]) <= 3000
    assert "Reset your password" in json.dumps(bodies, ensure_ascii=False), "the words stay readable"


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


async def test_teams_titles_facts_and_bodies_are_inert_and_within_limits(receiver: Receiver) -> None:
    bodies = await _deliver(receiver, SinkSettings(name="teams", type="teams", url=receiver.url))
    for body in bodies:
        card = body["attachments"][0]["content"]
        texts = {p: v for p, v in _strings(card["body"])}
        assert {p: h for p, v in texts.items() if (h := _hostile(v))} == {}
        assert len(card["body"][0]["text"]) <= 200, "the title"
        assert len(json.dumps(body, ensure_ascii=False).encode()) <= 28_000
        for fact in next(b for b in card["body"] if b["type"] == "FactSet")["facts"]:
            assert len(fact["value"]) <= 1000
        for action in card.get("actions", []):
            assert action["url"].startswith("http://grafana.local/")


async def test_pagerduty_summary_and_component_are_inert_and_cut(receiver: Receiver) -> None:
    spec = SinkSettings(
        name="pd", type="pagerduty", url=receiver.url, secret="R0UTINGKEY0123456789012345678901"
    )
    events = await _deliver(receiver, spec)
    assert len(events) == 3
    for event in events:
        payload = event["payload"]
        assert len(payload["summary"]) <= 1024 and len(payload["component"]) <= 255
        assert len(payload["group"]) <= 255 and len(payload["class"]) <= 255
        shown = {p: v for p, v in _strings(payload) if not p.endswith(".id")}
        assert {p: h for p, v in shown.items() if (h := _hostile(v))} == {}
        for link in event.get("links", []):
            assert link["href"].startswith("http://grafana.local/")


async def test_alertmanager_labels_and_annotations_are_inert_and_cut(receiver: Receiver) -> None:
    url = receiver.url.removesuffix("/hook")
    bodies = await _deliver(receiver, SinkSettings(name="am", type="alertmanager", url=url))
    for alerts in bodies:
        for a in alerts:
            assert all(len(v) <= 1024 for v in a["labels"].values())
            assert all(len(v) <= 4000 for v in a["annotations"].values())
            for name in ("examples", "incident_evidence", "incident_also_moved"):
                if name in a["annotations"]:
                    json.loads(a["annotations"][name])  # still valid JSON after cutting
            strings = dict(_strings({"labels": a["labels"], "annotations": a["annotations"]}))
            bad = {p: h for p, v in strings.items() if (h := _hostile(v, link=p.endswith(".dashboard")))}
            assert bad == {}
    # The fingerprint label keeps two keys apart even when their cut labels would collide.
    fingerprints = {a["labels"]["fingerprint"] for alerts in bodies for a in alerts}
    assert len(fingerprints) == 2


async def test_generic_webhook_human_fields_are_inert_and_data_fields_exact(receiver: Receiver) -> None:
    bodies = await _deliver(receiver, SinkSettings(name="hook", type="webhook", url=receiver.url))
    for body in bodies:
        assert _hostile(body["title"]) == [] and len(body["title"]) <= 300
        if body["incident"] is not None:
            assert _hostile(body["incident"]["summary"]) == []
            assert len(body["incident"]["summary"]) <= 3000
    # Machine-readable fields carry the posts' own values: the receiver escapes them where it shows them.
    assert bodies[0]["alerts"][0]["key"] == MENTION
    assert bodies[1]["alerts"][0]["key"] == LONG_KEY
    assert bodies[0]["alerts"][0]["examples"][0]["text"] == TEXT


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("<!channel> down", "‹!channel› down"),
        (PHISH, "Reset your password (hxxps://evil[.]example/reset)"),
        (HTML, "open the runbook (hxxps://evil[.]example/login)"),
        ("@here @everyone", "@\u200bhere @\u200beveryone"),
        ("a\n\n*b*\r\n\u202ec", "a *b* c"),
        ("[x][ref] ![img](http://a.example/i.png)", "[x] [ref] img (hxxp://a[.]example/i.png)"),
    ],
)
def test_neutral_makes_post_content_inert(raw: str, shown: str) -> None:
    from newswatch.alerts.sinks._text import neutral

    assert neutral(raw) == shown
    assert neutral(shown) == shown, "idempotent"
