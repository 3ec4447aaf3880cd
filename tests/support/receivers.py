"""The webhook receiver of the tests: a real aiohttp server, on loopback unless told otherwise.

Async tests take the ``receiver`` fixture (:mod:`tests.support.fixtures`) or ``await
Receiver().start()``; synchronous ones run it on its own event loop in a thread
(:meth:`Receiver.start_in_thread`, or ``with Receiver().threaded():``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    """One request the receiver accepted (answered 2xx)."""

    path: str
    headers: dict[str, str]
    body: bytes
    path_qs: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server that takes ``POST`` on any path. ``behaviour(n)`` picks the answer of the n-th
    request (0-based): an int status, or ``"hang"`` (sleep past the client timeout, record nothing)."""

    url: str = ""
    accepted: list[Received] = field(default_factory=list)
    attempts: int = 0
    behaviour: Callable[[int], int | str] = lambda n: 200
    delay_s: float = 0.0
    port: int = 0
    _runner: web.AppRunner | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

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
            self.accepted.append(Received(request.path, dict(request.headers), body, request.path_qs))
        return web.json_response({"status": "success" if action < 300 else "error"}, status=action)

    @property
    def received(self) -> list[bytes]:
        """Bodies of the accepted requests."""
        return [r.body for r in self.accepted]

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

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Receiver:
        """Listen on ``host:port`` (0: a free port); :attr:`url` is ``http://127.0.0.1:PORT/hook``."""
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        return self

    async def stop(self) -> None:
        """Stop listening (the address is free again); a no-op when not started."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> Receiver:
        """:meth:`start` on an event loop of its own in a daemon thread (for synchronous tests)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(host, port), self._loop).result(10)
        return self

    def close(self) -> None:
        """Stop what :meth:`start_in_thread` started."""
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()

    @contextlib.contextmanager
    def threaded(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[Receiver]:
        """``with``: :meth:`start_in_thread`, then :meth:`close`."""
        self.start_in_thread(host, port)
        try:
            yield self
        finally:
            self.close()
