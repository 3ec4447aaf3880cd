"""Issue 19, delivery: receivers that redirect (F4) or answer with huge bodies (F5), against real
HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from newswatch.alerts.delivery import deliver
from newswatch.alerts.exceptions import DeliveryError
from newswatch.alerts.sinks import Notification, build_sink
from newswatch.settings.alerts import NotifySettings, SinkSettings
from tests.support.alerts import make_alert

SECRET = "whsec_" + base64.b64encode(b"newswatch-redirect-test-key-32b!").decode()
SETTINGS = NotifySettings(max_attempts=4, backoff_initial_ms=1, backoff_max_ms=2)


@dataclass
class Server:
    """A loopback aiohttp server whose one route (any method, any path) is ``handler``."""

    url: str = ""
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    runner: web.AppRunner | None = None


async def _serve(handler: object) -> Server:
    server = Server()

    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        server.seen.append((request.method, request.path_qs, dict(request.headers), body))
        return await handler(request)  # type: ignore[operator, no-any-return]

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    server.runner = web.AppRunner(app, shutdown_timeout=0.1)
    await server.runner.setup()
    site = web.TCPSite(server.runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    return server


@pytest.fixture
async def elsewhere() -> AsyncIterator[Server]:
    """Another origin that accepts anything with 200 (where a redirect points)."""

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    server = await _serve(ok)
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


async def _redirecting(status: int, location: str) -> Server:
    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": location})

    return await _serve(redirect)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_a_failed_attempt_naming_the_location(status: int, elsewhere: Server) -> None:
    """F4: a 301/302/303 used to become a body-less GET to the other origin, whose 200 counted as
    delivered (the alert lost); a 307/308 re-sent the signed body and its signature there."""
    hook = await _redirecting(status, f"{elsewhere.url}/landing?token=abc")
    try:
        sink = build_sink(SinkSettings(name="hook", type="webhook", url=f"{hook.url}/hook", secret=SECRET))
        note = Notification(alerts=(make_alert(),), group="entity")
        async with sink:
            outcome = await deliver(sink, note, SETTINGS)
        assert not outcome.ok, "a redirect answer is not a delivery"
        assert outcome.attempts == 1, "not retried: the same URL redirects again"
        assert outcome.status == status
        assert f"HTTP {status}" in outcome.error and f"{elsewhere.url}/landing" in outcome.error
        assert "token=abc" not in outcome.error  # the query is not repeated
        assert "redirects are not followed" in outcome.error
        assert elsewhere.seen == [], "nothing reaches the other origin: no GET, no signed body"
        assert len(hook.seen) == 1
    finally:
        assert hook.runner is not None
        await hook.runner.cleanup()


async def test_a_redirect_to_the_sinks_own_host_does_not_show_the_path() -> None:
    """The sink URL may be a secret (Slack, Teams): a relative Location that repeats it is not logged."""
    hook = await _redirecting(302, "/services/T000/B000/CANARYsecretPath/")
    try:
        sink = build_sink(SinkSettings(name="chat", type="slack", url=f"{hook.url}/services/T000/B000/x"))
        async with sink:
            with pytest.raises(DeliveryError) as err:
                await sink.send(Notification(alerts=(make_alert(),), group="entity"))
        assert not err.value.retriable and err.value.status == 302
        assert "CANARY" not in str(err.value) and "own host" in str(err.value)
    finally:
        assert hook.runner is not None
        await hook.runner.cleanup()


async def test_alerts_test_says_the_sink_redirected(elsewhere: Server, tmp_path: Path) -> None:
    """F4 in ``newswatch alerts test``: one clear line, exit 1, and the other origin gets nothing."""
    hook = await _redirecting(307, f"{elsewhere.url}/moved")
    try:
        config = tmp_path / "newswatch.yaml"
        sinks = [{"name": "ops", "type": "webhook", "url": f"{hook.url}/hook", "secret": SECRET}]
        config.write_text(yaml.safe_dump({"notify": {"sinks": sinks}}))
        env = {**os.environ, "NEWSWATCH_CONFIG": str(config)}
        args = ["--log-level", "ERROR", "alerts", "test", "--sink", "ops"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "newswatch.cli.main", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        text = err.decode()
        assert proc.returncode == 1, (out, text)
        assert "NOT delivered after 1 attempt(s)" in text and "HTTP 307" in text
        assert f"{elsewhere.url}/moved" in text and "redirects are not followed" in text
        assert "Traceback" not in text and text.strip().count("\n") == 0
        assert elsewhere.seen == []
    finally:
        assert hook.runner is not None
        await hook.runner.cleanup()


@pytest.fixture
async def flood() -> AsyncIterator[tuple[Server, list[int]]]:
    """A receiver answering 400 with a 48 MiB body; ``sent[0]`` counts the bytes it got out."""
    sent = [0]
    chunk = b"x" * (1 << 16)

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=400, headers={"Content-Type": "text/plain"})
        resp.content_length = 48 << 20
        await resp.prepare(request)
        try:
            for _ in range((48 << 20) // len(chunk)):
                await resp.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up
        return resp

    server = await _serve(huge)
    yield server, sent
    assert server.runner is not None
    await server.runner.cleanup()


async def test_a_huge_error_reply_is_not_read_whole(flood: tuple[Server, list[int]]) -> None:
    """F5: the reply body was read whole (a 400 MB error page took `alerts test` to 877 MB RSS)."""
    server, sent = flood
    sink = build_sink(SinkSettings(name="hook", type="webhook", url=f"{server.url}/hook", timeout_s=20))
    t0 = time.perf_counter()
    async with sink:
        with pytest.raises(DeliveryError) as err:
            await sink.send(Notification(alerts=(make_alert(),), group="entity"))
    assert err.value.status == 400 and "HTTP 400" in str(err.value) and not err.value.retriable
    assert time.perf_counter() - t0 < 10
    await asyncio.sleep(0.2)  # let the server notice the closed connection
    # What left the server: the part read (MAX_REPLY_BYTES, 16 KiB) plus what the socket buffers held.
    assert sent[0] < 16 << 20, f"{sent[0] >> 20} MiB of the 48 MiB reply were read"


async def test_a_huge_success_reply_is_not_read_whole() -> None:
    """The cap holds for 2xx answers too (the body is never needed beyond a short excerpt)."""
    sent = [0]

    async def ok_huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        resp.content_length = 48 << 20
        await resp.prepare(request)
        try:
            for _ in range(768):
                await resp.write(b"y" * (1 << 16))
                sent[0] += 1 << 16
        except (ConnectionError, RuntimeError):
            pass
        return resp

    server = await _serve(ok_huge)
    try:
        sink = build_sink(SinkSettings(name="hook", type="webhook", url=f"{server.url}/hook", timeout_s=20))
        async with sink:
            assert await sink.send(Notification(alerts=(make_alert(),), group="entity")) == 200
        await asyncio.sleep(0.2)
        assert sent[0] < 16 << 20, f"{sent[0] >> 20} MiB of the 48 MiB reply were read"
    finally:
        assert server.runner is not None
        await server.runner.cleanup()
