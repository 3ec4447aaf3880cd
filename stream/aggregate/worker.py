"""The faust worker that runs the aggregator until SIGTERM/SIGINT: ``run_aggregator``.

faust owns the aggregator's event loop, so this worker is the aggregate stage's
run-until-signal runner (the other stages use :func:`newswatch.io.stage.run_until_signal`).
It serves ``/metrics``, ``/healthz`` and ``/readyz``, flushes the stage before faust stops,
and bounds faust's stop with a watchdog: faust can hang stopping its tables in the middle
of a backlog or flushing its changelog producer while the broker is gone (see
:class:`AggregateWorker`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from newswatch.errors import NewswatchError
from newswatch.io.stage import StageError
from newswatch.logs import report_error
from newswatch.metrics import Metrics
from newswatch.settings import Settings
from newswatch.stream.aggregate.stage import STAGE, Aggregator

__all__ = ["AggregateWorker", "run_aggregator"]

log = logging.getLogger(__name__)


class AggregateWorker(faust.Worker):
    """faust's worker with a flush before stopping and a bounded stop.

    Without the terminal spinner, whose handler puts the root logger at DEBUG (every aiokafka
    send then builds a log record: a measurable cost per event).
    """

    #: Called on SIGTERM/SIGINT before faust stops (the stage's final flush).
    before_stop: Callable[[], Awaitable[None]] | None = None
    #: An orderly stop that takes longer ends the process (exit code 0: everything is flushed).
    stop_timeout_s: float = 20.0
    #: A stop after a crash that takes longer ends the process with the crash's exit code.
    crash_stop_timeout_s: float = 10.0
    _watchdog: threading.Timer | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # newswatch.logs owns the root logger: faust must neither replace its handler nor
        # change its level (one log format for every stage, faust's own records included).
        kwargs.setdefault("override_logging", False)
        super().__init__(*args, **kwargs)
        self.spinner = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None

    def _arm_watchdog(self, after_s: float, code: int, error: str = "") -> None:
        if self._watchdog is None:
            timer = threading.Timer(after_s, _force_exit, args=(after_s, code, error))
            timer.daemon = True
            timer.start()
            self._watchdog = timer

    def on_worker_shutdown(self) -> None:
        """After a crash too, faust's stop must not hang: it does while the broker is down.

        Stopping, faust commits, and its commit first flushes the changelog producer, which
        waits for a broker that is gone (up to ``producer_request_timeout``, 20 minutes). Nothing
        is lost by not waiting: offsets are only committed after the changelog was flushed. The
        exit code is the one ``newswatch aggregate`` gives for the error (2 for a stage error).
        """
        reason = self.crash_reason
        if reason is not None:
            if isinstance(reason, StageError):
                code, error = reason.exit_code, str(reason)
            elif isinstance(reason, NewswatchError):
                code, error = 2, str(reason)
            else:
                code, error = 1, repr(reason)
            self._arm_watchdog(self.crash_stop_timeout_s, code, error)

    async def _stop_on_signal(self, signal: Any) -> None:
        """On SIGTERM/SIGINT: flush (emit, write state, ack, commit) first, then stop.

        faust can hang while stopping its tables when it stops in the middle of a backlog
        (seen here; compare faust-streaming issue #162). Everything is durable after the
        flush, so a watchdog ends the process if the orderly stop takes longer than
        ``stop_timeout_s``. (faust offers no public hook before its signal stop.)
        """
        if self.before_stop is not None:
            try:
                await asyncio.wait_for(self.before_stop(), timeout=10.0)
            except Exception as exc:  # stopping anyway: unacked events are re-read after a restart
                log.warning("aggregate: final flush failed: %r", exc)
        self._arm_watchdog(self.stop_timeout_s, 0)
        await super()._stop_on_signal(signal)


def _force_exit(after_s: float, code: int, error: str) -> None:
    log.warning("aggregate: faust did not stop within %.0f s; exiting with code %d", after_s, code)
    if error:
        report_error("aggregate", error)
    logging.shutdown()
    os._exit(code)


def run_aggregator(
    settings: Settings, metrics: Metrics | None = None, *, log_level: str | None = None
) -> int:
    """Create the topics, then run the aggregator as a faust worker until SIGTERM/SIGINT.

    Blocking: the worker owns the event loop. It serves ``/metrics``, ``/healthz`` and
    ``/readyz`` on ``settings.metrics`` (no faust web server; the port is bound before
    anything else, so a taken port is a :class:`~newswatch.errors.ConfigError`, exit 2).
    Logging stays as :mod:`newswatch.logs` set it (``log_level`` is accepted for
    compatibility and ignored). Returns the exit code; raises
    :class:`~newswatch.stream.aggregate.stage.AggregateError` when it stopped because Kafka
    did not take its output (a broker outage longer than ``kafka.request_timeout_ms`` while
    it had output to write).
    """
    from newswatch.io.http import StageServer, bind_error

    aggregator = Aggregator(settings, metrics)
    host, port = settings.metrics.host, settings.metrics.port_for(STAGE)
    loop = asyncio.new_event_loop()
    server = StageServer(
        aggregator.metrics.registry,
        ready=lambda: aggregator.ready,
        alive=lambda: aggregator.alive,
        host=host,
        port=port,
    )
    try:
        loop.run_until_complete(server.start())  # served once faust runs this loop
    except OSError as exc:
        loop.close()
        raise bind_error(host, port, exc) from None
    try:
        asyncio.run(aggregator.create_topics())
    except BaseException:
        loop.run_until_complete(server.stop())
        loop.close()
        raise
    asyncio.set_event_loop(loop)
    log.info(
        "aggregate: metrics on %s/metrics; %s -> %s, windows %s",
        server.url,
        aggregator.input_topic_name,
        settings.topics.windows,
        ", ".join(settings.aggregate.window_names()),
        extra={"metrics_url": f"{server.url}/metrics", "app_id": settings.aggregate.app_id},
    )

    async def _stop_server(*args: Any, **kwargs: Any) -> None:
        await server.stop()

    aggregator.app.on_before_shutdown.connect(_stop_server)
    worker = AggregateWorker(aggregator.app, loop=loop, quiet=True, redirect_stdouts=False)
    worker.before_stop = aggregator.final_flush
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    if aggregator.failure is not None:
        raise aggregator.failure
    return code
