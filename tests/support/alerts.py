"""Alert events for the tests (single alerts and a scripted incident), producing them to the
alerts topic, driving a notifier, and ``newswatch notify`` as a child process."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from newswatch.alerts.events import AlertEvent, fingerprint_of
from newswatch.alerts.incidents import IncidentBook
from newswatch.alerts.notify import Notifier
from newswatch.alerts.sinks.base import Notification
from newswatch.io.schemas import WindowStat
from newswatch.settings import KafkaSettings

T = 1_700_000_040_000
MIN = 60_000


#: Event time of the first window the helpers below build.
WINDOW_T0 = 1_700_000_000_000


def entity_window(i: int, count: int, key: str = "$NVDA", example_id: str | None = None) -> WindowStat:
    """The ``i``-th final one-minute window of entity ``key`` with ``count`` posts and one example."""
    return WindowStat(
        kind="entity",
        key=key,
        window="tumbling_60000",
        start_ms=WINDOW_T0 + i * 60_000,
        end_ms=WINDOW_T0 + (i + 1) * 60_000,
        count=count,
        mean_score=-0.1,
        negative_share=0.2,
        examples=({"id": example_id or f"p{i}", "text": f"{key} news", "url": None, "score": -0.5},),
        final=True,
    )


def make_alert(
    key: str = "$NVDA",
    status: str = "firing",
    signal: str = "volume",
    kind: str = "entity",
    severity: str = "warning",
    episode_start_ms: int = T,
    *,
    start_ms: int | None = None,
    observed: float = 120.0,
    baseline: float = 14.5,
    score: float = 0.91,
    support: int = 120,
    examples: tuple[dict[str, Any], ...] | None = None,
) -> AlertEvent:
    """A realistic alert event of the one-minute window starting at ``start_ms`` (default: the
    episode's start), for sink, delivery and incident tests."""
    start = episode_start_ms if start_ms is None else start_ms
    if examples is None:  # post ids differ per key: alerts of different keys share no posts (no incident)
        examples = (
            {
                "id": f"{key}-p1",
                "text": f"{key} plunges after guidance cut",
                "url": "https://example.com/p1",
                "score": -0.97,
            },
            {
                "id": f"{key}-p2",
                "text": f"{key} sell-off deepens",
                "url": "https://example.com/p2",
                "score": -0.9,
            },
            {"id": f"{key}-p3", "text": f"Analysts downgrade {key}", "url": None, "score": -0.8},
        )
    return AlertEvent(
        fingerprint=fingerprint_of(kind, key, "tumbling_60000", signal, "robust_zscore"),
        status=status,  # type: ignore[arg-type]
        severity=severity,  # type: ignore[arg-type]
        kind=kind,
        key=key,
        signal=signal,
        rule="robust_zscore",
        window="tumbling_60000",
        start_ms=start,
        end_ms=start + MIN,
        episode_start_ms=episode_start_ms,
        observed=observed,
        baseline=baseline,
        score=score,
        support=support,
        examples=examples,
        dashboard_url=f"http://grafana.local/d/newswatch?var-key={key}",
    )


# ---------------------------------------------------------------------------------- an incident


def post(pid: str, *entities: str, score: float = -0.95) -> dict[str, Any]:
    """An example post of an alert, about ``entities``."""
    return {
        "id": pid,
        "text": f"post {pid}",
        "url": f"https://x.test/{pid}",
        "score": score,
        "entities": list(entities),
    }


def alert(
    kind: str,
    key: str,
    signal: str,
    posts: tuple[dict[str, Any], ...],
    observed: float,
    baseline: float,
    support: int,
    window: int = 0,
    score: float = 0.9,
) -> AlertEvent:
    """A firing alert of the window ``window`` minutes after ``T``."""
    start = T + window * MIN
    return make_alert(
        key, "firing", signal, kind, episode_start_ms=start,
        observed=observed, baseline=baseline, score=score, support=support, examples=posts,
    )  # fmt: skip


def resolved(a: AlertEvent, window: int) -> AlertEvent:
    """``a`` resolved in the window ``window`` minutes after ``T``."""
    start = T + window * MIN
    return replace(a, status="resolved", start_ms=start, end_ms=start + MIN)


NVDA_POSTS = (post("n1", "$NVDA"), post("n2", "$NVDA"), post("n3", "$NVDA"))
# The topic fired one window later: other posts, but most of its worst ones are about $NVDA.
FIN_POSTS = (post("f1", "$NVDA"), post("f2", "$NVDA"), post("f3", "$JPM", score=-0.8))


def nvda_incident() -> list[AlertEvent]:
    """$NVDA (two signals), its topic, a source it was posted on and the global key."""
    return [
        alert("entity", "$NVDA", "negative_share", NVDA_POSTS, 0.8, 0.1, 50),  # 35 excess bearish posts
        alert("entity", "$NVDA", "volume", NVDA_POSTS, 50, 10, 50),
        alert("topic", "Financials", "negative_share", FIN_POSTS, 0.45, 0.2, 160, window=1),  # 40 excess
        alert("source", "reddit", "mean_sentiment", (post("n1", "$NVDA"), post("r9")), -0.4, 0.1, 30),
        alert("global", "all", "negative_share", (post("f1", "$NVDA"), post("g7")), 0.3, 0.2, 900, window=1),
    ]


def jpm_alert(window: int = 0) -> AlertEvent:
    """Fires at the same time, on its own posts: not part of the $NVDA incident."""
    return alert("entity", "$JPM", "volume", (post("j1", "$JPM"), post("j2", "$JPM")), 30, 8, 30, window)


def incident_note(status: str = "firing") -> Notification:
    """The notification of the $NVDA incident, firing or resolved."""
    book = IncidentBook(gap_ms=10 * MIN)
    events = nvda_incident()
    [page] = book.observe(events).pages
    if status == "resolved":
        [page] = book.observe([resolved(a, 5) for a in events]).pages
    groups = {a.fingerprint: a.kind for a in page.alerts}
    return Notification(alerts=page.alerts, group="incident", incident=page.summary(groups))


# ------------------------------------------------------------------------------- the notifier


async def produce_alerts(
    kafka: KafkaSettings, topic: str, events: Sequence[AlertEvent], raw: Sequence[bytes] = ()
) -> None:
    """Send ``events`` one by one (keyed by fingerprint), then the ``raw`` records (keyed ``bad``)."""
    producer = AIOKafkaProducer(**kafka.client_kwargs())
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(topic, e.to_json(), key=e.fingerprint.encode())
        for r in raw:
            await producer.send_and_wait(topic, r, key=b"bad")
    finally:
        await producer.stop()


async def pump(notifier: Notifier, done: Callable[[], bool], timeout_s: float = 45.0) -> None:
    """Step ``notifier`` until ``done()``; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "condition not reached in time"
        await notifier.step(timeout_ms=100)


async def start_notifier(config: Path, log: Path) -> asyncio.subprocess.Process:
    """``newswatch notify`` as a child process with ``config``, its stderr appended to ``log``."""
    env = {**os.environ, "NEWSWATCH_METRICS_PORT": "0"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "newswatch.cli.main", "--config", str(config), "--log-level", "INFO",
        "notify", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log.open("ab"),
    )  # fmt: skip
