"""Fixtures of the alerts tests: a real HTTP receiver on loopback, Kafka settings for the session broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from newswatch.alerts.events import AlertEvent, fingerprint_of
from newswatch.settings import KafkaSettings, TopicSettings


@dataclass
class Received:
    """One request the receiver accepted (answered 2xx)."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1. ``behaviour(n)`` picks the answer of the n-th request (0-based):
    an int status, or ``"hang"`` (sleep past the client timeout, record nothing)."""

    url: str = ""
    accepted: list[Received] = field(default_factory=list)
    attempts: int = 0
    behaviour: Callable[[int], int | str] = lambda n: 200
    delay_s: float = 0.0
    seen_ids: set[str] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        n = self.attempts
        self.attempts += 1
        action = self.behaviour(n)
        if action == "hang":
            await asyncio.sleep(30)
            return web.Response(status=200)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        assert isinstance(action, int)
        if 200 <= action < 300:
            self.accepted.append(Received(request.path, dict(request.headers), body))
        return web.json_response({"status": "success" if action < 300 else "error"}, status=action)

    def alert_keys(self) -> list[str]:
        """Idempotency keys of every alert in every accepted generic-webhook payload (duplicates kept),
        counting a retried webhook-id once, as a receiver deduplicating by it would."""
        keys: list[str] = []
        ids: set[str] = set()
        for r in self.accepted:
            wid = r.headers.get("webhook-id", "")
            if wid and wid in ids:
                continue
            ids.add(wid)
            keys.extend(a["idempotency_key"] for a in r.json()["alerts"])
        return keys


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP receiver on a free loopback port."""
    rec = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


@pytest.fixture
def kafka(bootstrap: str) -> KafkaSettings:
    """Kafka settings for the session broker (fast group joins on Tansu)."""
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        broker_compat="tansu",
        partitions=2,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )


@pytest.fixture
def topics(unique: str) -> TopicSettings:
    """Topic names of this test only."""
    return TopicSettings(
        posts=f"posts-{unique}",
        scored=f"scored-{unique}",
        windows=f"windows-{unique}",
        alerts=f"alerts-{unique}",
        dead_letter=f"dlq-{unique}",
        alerts_dead_letter=f"alerts-dlq-{unique}",
    )


def make_alert(
    key: str = "$NVDA",
    status: str = "firing",
    signal: str = "volume",
    kind: str = "entity",
    severity: str = "warning",
    episode_start_ms: int = 1_700_000_040_000,
) -> AlertEvent:
    """A realistic alert event for sink and delivery tests."""
    return AlertEvent(
        fingerprint=fingerprint_of(kind, key, "tumbling_60000", signal, "robust_zscore"),
        status=status,  # type: ignore[arg-type]
        severity=severity,  # type: ignore[arg-type]
        kind=kind,
        key=key,
        signal=signal,
        rule="robust_zscore",
        window="tumbling_60000",
        start_ms=episode_start_ms,
        end_ms=episode_start_ms + 60_000,
        episode_start_ms=episode_start_ms,
        observed=120.0,
        baseline=14.5,
        score=0.91,
        support=120,
        examples=(  # post ids differ per key: alerts of different keys share no posts (no incident)
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
        ),
        dashboard_url=f"http://grafana.local/d/newswatch?var-key={key}",
    )
