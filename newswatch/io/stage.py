"""One way to be a stage: the :class:`Stage` base, its error, and the run-until-signal runner.

Every stage (classify, aggregate, detect, notify) is a :class:`Stage`:

* built as ``Stage(settings, metrics)`` from the whole settings tree (extra collaborators,
  such as the classify engine or the notifier's sinks, are keyword arguments);
* a :class:`~newswatch.lifecycle.Service`: ``start()`` (a second call raises
  ``RuntimeError``), idempotent ``stop()``, ``async with``;
* ``run(stop)`` processes until ``stop`` is set;
* rejected input goes through one :class:`~newswatch.io.deadletter.DeadLetterWriter`
  (:attr:`Stage.dead_letters`), keyed ``topic/partition/offset``;
* when Kafka does not take its output within ``kafka.request_timeout_ms``, the stage calls
  :meth:`Stage.fail`, which records and returns the stage's :class:`StageError` (raised by
  the caller; the command exits with :attr:`StageError.exit_code`, 2).

:func:`run_until_signal` runs any stage with ``/metrics``, ``/healthz`` and ``/readyz``
until SIGINT/SIGTERM or its failure. (The aggregator is the one stage whose event loop
belongs to faust; its worker, ``newswatch.stream.aggregate.worker``, plays this part.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import ClassVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from newswatch.errors import NewswatchError
from newswatch.io.deadletter import DeadLetterWriter
from newswatch.lifecycle import Service
from newswatch.metrics import Metrics
from newswatch.settings import Settings

__all__ = ["Stage", "StageError", "run_until_signal"]

log = logging.getLogger(__name__)


class StageError(NewswatchError):
    """A stage stopped because Kafka failed beyond the client's retries.

    Retriable: restarted, the stage reads again from its last committed offset; nothing
    acknowledged is lost. Each stage has its own subclass (``ClassifyError``, ...).
    """

    retriable = True
    #: The exit code of the command that ran the stage.
    exit_code: ClassVar[int] = 2


class Stage(Service):
    """Base of the pipeline stages.

    Parameters
    ----------
    settings
        The whole settings tree.
    metrics
        Where the stage counts (a fresh registry if omitted).

    Subclasses set :attr:`name` (the ``stage`` label of metrics and dead letters) and
    :attr:`error` (their :class:`StageError` subclass), call :meth:`_claim_start` first in
    ``start()``, and implement ``run(stop)``.
    """

    #: The stage label in metrics and dead letters.
    name: ClassVar[str] = "stage"
    #: The error :meth:`fail` returns.
    error: ClassVar[type[StageError]] = StageError
    #: What a restart recovers, appended to the failure message.
    restart_note: ClassVar[str] = "restart it: it reads again from the last committed offset"

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = (
            metrics if metrics is not None else Metrics(top_k_entities=settings.metrics.top_k_entities)
        )
        #: The error that stopped the stage (see :meth:`fail`), else ``None``.
        self.failure: StageError | None = None
        #: The dead-letter writer, once the stage's producer is started.
        self.dead_letters: DeadLetterWriter | None = None
        self._started = False

    # lifecycle -----------------------------------------------------------------------------
    def _claim_start(self) -> None:
        """The second-start guard: a stage starts once (create a new one to start again)."""
        if self._started:
            raise RuntimeError(f"{type(self).__name__} was started already; create a new one")
        self._started = True

    def _open_dead_letters(self, producer: AIOKafkaProducer, topic: str) -> DeadLetterWriter:
        """The stage's :class:`DeadLetterWriter` on ``topic``, through its own started producer."""
        self.dead_letters = DeadLetterWriter(producer, topic, self.name, self.metrics)
        return self.dead_letters

    @abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Process until ``stop`` is set; raise the stage's error when it fails."""

    # state ---------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """False once the stage failed (``/healthz``)."""
        return self.failure is None

    @property
    def ready(self) -> bool:
        """Started and not failed (``/readyz``); stages with more to wait for narrow it."""
        return self._holds_resources() and self.failure is None

    # failure -------------------------------------------------------------------------------
    def fail(self, what: str, exc: BaseException) -> StageError:
        """Record why the stage stops and return its error, for the caller to raise.

        ``what`` names the operation, e.g. ``"the delivery record of msg_1"``. A
        :class:`KafkaError` there means aiokafka retried it for ``kafka.request_timeout_ms``:
        the broker has been unreachable that long. Going on would either hold offsets forever
        or commit past output that is missing, so the stage stops and its restart reads again
        from the committed offsets. The first failure is kept; later calls return it.
        """
        if self.failure is None:
            kafka = self.settings.kafka
            if isinstance(exc, KafkaError):
                message = (
                    f"Kafka at {kafka.bootstrap_servers} did not take {what} within "
                    f"request_timeout_ms={kafka.request_timeout_ms} ({type(exc).__name__}: {exc}); "
                    f"stopping so the {self.name} stage is restarted ({self.restart_note})"
                )
            else:
                message = f"{self.name} stage stopped: {what} failed ({type(exc).__name__}: {exc})"
            self.failure = self.error(message)
            self.failure.__cause__ = exc
            log.error("%s: %s", self.name, message)
        return self.failure


async def run_until_signal(
    stage: Stage | Callable[[], Awaitable[Stage]],
    *,
    host: str,
    port: int,
    metrics: Metrics | None = None,
    grace_s: float = 20.0,
) -> None:
    """Run a stage with ``/metrics``, ``/healthz`` and ``/readyz`` until SIGINT/SIGTERM.

    ``stage`` is a stage, or an async factory of one (for stages that load something first,
    like classify's model: the endpoint already answers, not ready, meanwhile; pass the
    ``metrics`` the factory gives the stage). The stage is started, ``stage.run(stop)`` runs
    until a signal sets ``stop`` (its current step finishes; one stuck past ``grace_s`` is
    cancelled and re-read after a restart) or until it fails; then the stage is stopped.
    Raises the stage's :class:`StageError` when it failed,
    :class:`~newswatch.errors.ConfigError` when the port is taken.
    """
    from newswatch.io.http import StageServer, bind_error

    if isinstance(stage, Stage):
        metrics = stage.metrics
    elif metrics is None:
        raise TypeError("run_until_signal: pass the metrics of the stage the factory builds")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    built: list[Stage] = [stage] if isinstance(stage, Stage) else []
    running: list[asyncio.Task[None]] = []

    def ready() -> bool:
        return bool(running) and not running[0].done() and built[0].ready

    def alive() -> bool:
        if built and not built[0].alive:
            return False
        return not (running and running[0].done() and not stop.is_set())

    server = StageServer(metrics.registry, ready=ready, alive=alive, host=host, port=port)
    try:
        await server.start()
    except OSError as exc:
        raise bind_error(host, port, exc) from None
    try:
        if not built:
            assert not isinstance(stage, Stage)
            built.append(await stage())
        the_stage = built[0]
        log.info(
            "%s: metrics on %s/metrics",
            the_stage.name,
            server.url,
            extra={"metrics_url": f"{server.url}/metrics"},
        )
        async with the_stage:
            task = asyncio.create_task(the_stage.run(stop), name=f"{the_stage.name}-run")
            running.append(task)
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            stopper.cancel()
            try:
                await asyncio.wait_for(task, timeout=grace_s)
            except TimeoutError:
                log.warning("%s did not finish its step within %s s; stopping it", the_stage.name, grace_s)
    finally:
        await server.stop()
    if the_stage.failure is not None:
        raise the_stage.failure
