"""``bench/pages.py``: its counting and report logic on hand-made alerts and webhook payloads.

The full run (the StockNet stream through every stage) is ``python bench/pages.py --json``.
"""

from __future__ import annotations

import doctest
from types import ModuleType
from typing import Any

import pytest

from tests.support.bench import load_bench

DAY = 86_400_000
T0 = 1_388_534_400_000  # 2014-01-01 00:00 UTC


@pytest.fixture(scope="module")
def pages() -> ModuleType:
    return load_bench("pages")


def alert(
    key: str, start: int, status: str = "firing", signal: str = "volume", kind: str = "entity", **kw: Any
) -> dict[str, Any]:
    a = {
        "fingerprint": f"{kind}{key}{signal}",
        "status": status,
        "severity": "warning",
        "kind": kind,
        "key": key,
        "signal": signal,
        "start_ms": start,
        "end_ms": start + 60_000,
        "episode_start_ms": kw.pop("episode", start),
        "support": 12,
        "examples": [{"id": f"p{start}", "text": f"post at {start}", "score": -0.5}],
    }
    a.update(kw)
    return a


def note(*alerts: dict[str, Any], incident: dict[str, Any] | None = None) -> dict[str, Any]:
    statuses = {a["status"] for a in alerts}
    return {
        "id": "msg_" + "-".join(f"{a['fingerprint']}{a['start_ms']}{a['status']}" for a in alerts),
        "status": statuses.pop() if len(statuses) == 1 else "mixed",
        "alerts": list(alerts),
        "incident": incident,
    }


def test_doctests(pages: ModuleType) -> None:
    assert doctest.testmod(pages).failed == 0


def test_window_shapes(pages: ModuleType) -> None:
    assert pages.window_shapes(["tumbling_60000", "hopping_300000_60000"]) == (60_000, ((300_000, 60_000),))
    assert pages.window_shapes(["tumbling_60000", "tumbling_300000"]) == (60_000, ((300_000, 300_000),))
    with pytest.raises(SystemExit):
        pages.window_shapes(["sliding_5"])


def test_notifications_dedupe_on_webhook_id(pages: ModuleType) -> None:
    a, b = note(alert("$A", T0)), note(alert("$B", T0))
    got = pages.unique_notifications([({"webhook-id": "m1"}, a), ({"Webhook-Id": "m1"}, a), ({}, b)])
    assert got == [a, b]


def test_analyse_counts_per_event_day_and_kind(pages: ModuleType) -> None:
    posts = [T0 + i * DAY // 4 for i in range(4 * 10)]  # ten days, four posts a day
    fired = [alert("$A", T0 + DAY), alert("$B", T0 + DAY + 60_000), alert("all", T0 + 5 * DAY, kind="global")]
    resolved = [
        alert("$A", T0 + DAY + 300_000, status="resolved", episode=T0 + DAY),
        alert("$B", T0 + DAY + 360_000, status="resolved", episode=T0 + DAY + 60_000),
    ]
    notes = [note(fired[0], fired[1]), note(*resolved), note(fired[2])]
    out = pages.analyse([*fired, *resolved], notes, posts, posts[-1] + DAY)
    n = out["notifications"]
    assert out["span"]["days"] == 10
    assert (n["total"], n["with_firing"], n["resolved_only"]) == (3, 2, 1)
    assert n["per_day"]["mean_per_day"] == 0.3
    assert n["by_kind"] == {"entity": 2, "global": 1}
    assert n["within_budget"] is True
    assert out["busiest_days"][0]["day"] == "2014-01-02"
    assert out["busiest_days"][0]["notifications"] == 2
    assert out["alerts"]["firing"] == 3 and out["alerts"]["fired_per_day"]["2014-01-02"] == 2
    # $A and $B overlap in event time: one incident of two alerts, touched by both its notifications
    largest = out["incidents"]["largest"][0]
    assert out["incidents"]["source"] == "overlapping episodes"
    assert (largest["alerts"], largest["keys"], largest["notifications"]) == (
        2,
        ["entity:$A", "entity:$B"],
        2,
    )


def test_after_last_post_is_apart(pages: ModuleType) -> None:
    posts = [T0, T0 + DAY]
    late = alert("$A", T0 + 3 * DAY, status="resolved")
    out = pages.analyse([late], [note(late)], posts, T0 + 3 * DAY)
    assert out["notifications"]["after_last_post"] == 1
    assert out["notifications"]["per_day"]["total"] == 0


def test_incidents_from_the_notifier_payload(pages: ModuleType) -> None:
    posts = [T0, T0 + DAY]
    a, b = alert("$A", T0 + 600_000), alert("Tech", T0 + 600_000, kind="topic")
    inc = {
        "id": "inc1",
        "status": "firing",
        "lead": {"kind": "entity", "key": "$A", "signals": ["volume"]},
        "summary": "$A explains it",
        "evidence": [{"id": "e1", "text": "bad news", "score": -0.9}],
        "start_ms": T0 + 600_000,
        "end_ms": T0 + 660_000,
    }
    out = pages.analyse([a, b], [note(a, b, incident=inc)], posts, T0 + 2 * DAY)
    assert out["incidents"]["source"] == "notifier"
    top = out["incidents"]["largest"][0]
    assert (top["alerts"], top["lead"], top["notifications"]) == (2, "entity:$A", 1)
    assert top["top_posts"][0]["text"] == "bad news"
