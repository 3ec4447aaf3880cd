"""The small HTTP endpoint every stage serves: ``/metrics``, ``/healthz``, ``/readyz``.

``/metrics`` exposes the given Prometheus registry; ``/healthz`` answers 200 while the
process's event loop runs (and the optional ``alive`` callback agrees); ``/readyz``
answers 200 when the ``ready`` callback returns true (for example: the consumer has
joined its group and the model is loaded), 503 otherwise.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from newswatch.errors import ConfigError
from newswatch.lifecycle import Service

__all__ = ["StageServer", "bind_error", "serve"]


def bind_error(host: str, port: int, exc: OSError) -> ConfigError:
    """The one-line error of a stage whose metrics endpoint cannot bind (the command exits 2).

    ``metrics port 9400 is in use; pass --metrics-port N or 0 for a free one (or set
    NEWSWATCH_METRICS_PORT)``; another cause (an address not on this host, a privileged
    port) names the address and the reason.
    """
    code = exc.errno
    if code is None and "address already in use" in str(exc).lower():
        code = errno.EADDRINUSE
    if code == errno.EADDRINUSE:
        return ConfigError(
            f"metrics port {port} is in use; pass --metrics-port N or 0 for a free one "
            "(or set NEWSWATCH_METRICS_PORT)"
        )
    reason = exc.strerror or str(exc)
    return ConfigError(
        f"cannot serve metrics on {host}:{port} ({reason}); pass --metrics-host and --metrics-port "
        "(or set NEWSWATCH_METRICS_HOST and NEWSWATCH_METRICS_PORT)"
    )


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: a free port); the runner to clean up and the bound port.

    A bind error (``OSError``) leaves nothing running.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    server = site._server
    sockets = getattr(server, "sockets", None) or [] if server is not None else []
    if port == 0 and sockets:
        port = int(sockets[0].getsockname()[1])
    return runner, port


class StageServer(Service):
    """aiohttp server for one stage's metrics and probes.

    Parameters
    ----------
    registry
        The registry ``/metrics`` exposes.
    ready
        Readiness callback for ``/readyz``.
    alive
        Liveness callback for ``/healthz`` (default: always alive).
    host, port
        Bind address; port 0 picks a free port (read :attr:`port` after :meth:`start`).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], bool] = lambda: True,
        alive: Callable[[], bool] = lambda: True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.registry = registry
        self.ready = ready
        self.alive = alive
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9400``."""
        return f"http://{self.host}:{self._port}"

    async def start(self) -> None:
        """Bind and serve."""
        if self._runner is not None:
            raise RuntimeError("StageServer already started")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner, self._port = await serve(app, self.host, self._port)

    async def stop(self) -> None:
        """Stop serving; a no-op when stopped."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _holds_resources(self) -> bool:
        return self._runner is not None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = _safe(self.alive)
        return web.Response(text="ok\n" if ok else "unhealthy\n", status=200 if ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        ok = _safe(self.ready)
        return web.Response(text="ready\n" if ok else "not ready\n", status=200 if ok else 503)


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:
        return False
