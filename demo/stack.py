"""A whole local pipeline in one command: the embedded broker and every stage as child processes.

``newswatch up`` runs it, for trying newswatch on one's own data without the demo's
generator: feed it with ``newswatch replay FILE`` or any Kafka producer. Each stage is a
child process with its own metrics port and log file (:mod:`newswatch.demo.stages`); the
settings are the user's (config file and environment), pointed at the embedded broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from pydantic import SecretStr

from newswatch.demo.broker import EmbeddedBroker
from newswatch.demo.stages import StageProcess, stage_process
from newswatch.errors import NewswatchError
from newswatch.io.kafka import create_topics
from newswatch.settings import Settings

__all__ = ["STAGES", "LocalStack", "StackError"]

#: (name, command) of every stage, in start order.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("classify", ("classify",)),
    ("aggregate", ("aggregate",)),
    ("detect", ("alerts", "run")),
    ("notify", ("notify",)),
)


def _plain(value: Any) -> Any:
    """Settings as YAML-safe values, secrets revealed (``mode="json"`` would mask them)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class StackError(NewswatchError):
    """A part of the local stack did not start or stopped."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one running stage can be observed."""

    stage: str
    metrics_url: str
    log: Path


class LocalStack:
    """The embedded broker plus the chosen stages; a context manager.

    ``stages`` names entries of :data:`STAGES`; ``notify`` needs at least one sink in the
    settings. Entering starts everything and waits until each stage answers ``/readyz``
    (``ready_timeout_s``); a stage that exits first raises :class:`StackError` with the end
    of its log. ``log_format`` (``json``) is passed to every stage as ``--log-format``.
    """

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        stages: tuple[str, ...] = tuple(dict(STAGES)),
        broker_port: int | None = None,
        ready_timeout_s: float = 240.0,
        log_format: str | None = None,
    ) -> None:
        unknown = set(stages) - {name for name, _ in STAGES}
        if unknown:
            raise StackError(f"unknown stage(s) {', '.join(sorted(unknown))}")
        self.settings = settings
        self.workdir = workdir
        self.stages = stages
        self.broker = EmbeddedBroker(port=broker_port)
        self.ready_timeout_s = ready_timeout_s
        #: ``--log-format`` of every stage (None: their default, human).
        self.log_format = log_format
        self._exit = contextlib.ExitStack()
        self.running: list[StageProcess] = []

    @property
    def bootstrap_servers(self) -> str:
        """The embedded broker's address."""
        return self.broker.bootstrap_servers

    def __enter__(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit.close()

    def _start(self) -> None:
        self._exit.enter_context(self.broker)
        kafka = self.settings.kafka.model_copy(
            update={"bootstrap_servers": self.broker.bootstrap_servers, "broker_compat": "tansu"}
        )
        settings = self.settings.model_copy(update={"kafka": kafka})
        asyncio.run(create_topics(kafka, settings.topics.all()))
        config = self.workdir / "newswatch.yaml"
        config.write_text(yaml.safe_dump(_plain(settings.model_dump(exclude_none=True))))
        config.chmod(0o600)  # it may hold sink secrets
        commands = dict(STAGES)
        fmt = ("--log-format", self.log_format) if self.log_format else ()
        for name in self.stages:
            args = (*fmt, *commands[name])
            proc = self._exit.enter_context(stage_process(name, args, config, self.workdir))
            self.running.append(proc)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        waiting = list(self.running)
        while waiting:
            for proc in list(waiting):
                if proc.proc.poll() is not None:
                    raise StackError(
                        f"{proc.name} exited with {proc.proc.returncode}:\n{self.log_tail(proc)}"
                    )
                if proc.ready():
                    waiting.remove(proc)
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                raise StackError(
                    f"not ready after {self.ready_timeout_s:g} s: {names} (logs in {self.workdir})"
                )
            time.sleep(0.5)  # polling child processes' /readyz: there is no event to await across processes

    def endpoints(self) -> list[Endpoint]:
        """Metrics URL and log file of every running stage."""
        return [Endpoint(p.name, f"http://127.0.0.1:{p.port}/metrics", p.log) for p in self.running]

    def stopped(self) -> StageProcess | None:
        """The first stage whose process has exited, if any."""
        return next((p for p in self.running if p.proc.poll() is not None), None)

    @staticmethod
    def log_tail(proc: StageProcess, lines: int = 20) -> str:
        """The last lines of a stage's log."""
        try:
            return "\n".join(proc.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
