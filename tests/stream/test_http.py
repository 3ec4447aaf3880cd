"""The stage HTTP endpoint over real loopback HTTP."""

from __future__ import annotations

import aiohttp
import pytest

from newswatch.demo.broker import free_port
from newswatch.io.http import StageServer
from newswatch.metrics import Metrics


async def test_metrics_health_and_readiness(metrics: Metrics) -> None:
    metrics.consumed.labels("classify").inc(7)
    state = {"ready": False}
    async with (
        StageServer(metrics.registry, ready=lambda: state["ready"]) as server,
        aiohttp.ClientSession() as http,
    ):
        assert server.port > 0
        async with http.get(f"{server.url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            body = await resp.text()
        assert 'newswatch_stream_messages_consumed_total{stage="classify"} 7.0' in body
        async with http.get(f"{server.url}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{server.url}/readyz") as resp:
            assert resp.status == 503
        state["ready"] = True
        async with http.get(f"{server.url}/readyz") as resp:
            assert resp.status == 200
        async with http.get(f"{server.url}/nope") as resp:
            assert resp.status == 404


async def test_failing_checks_report_unhealthy(metrics: Metrics) -> None:
    def boom() -> bool:
        raise RuntimeError("x")

    async with (
        StageServer(metrics.registry, ready=boom, alive=boom) as server,
        aiohttp.ClientSession() as http,
    ):
        for path in ("/healthz", "/readyz"):
            async with http.get(f"{server.url}{path}") as resp:
                assert resp.status == 503


async def test_fixed_port_and_idempotent_stop(metrics: Metrics) -> None:
    port = free_port()
    server = StageServer(metrics.registry, port=port)
    await server.start()
    assert server.port == port
    with pytest.raises(OSError):
        await StageServer(metrics.registry, port=port).start()
    await server.stop()
    await server.stop()
