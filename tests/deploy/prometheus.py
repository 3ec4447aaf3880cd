"""A real Prometheus server (Debian's ``prometheus``) on a free loopback port, for the dashboard tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from newswatch.demo.broker import free_port
from newswatch.processes import stop_process
from tests.support.poll import http_ok, wait_until_sync

__all__ = ["PrometheusServer", "QueryError", "Target"]


class QueryError(RuntimeError):
    """Prometheus rejected a query (bad PromQL) or could not be reached."""


@dataclass(frozen=True)
class Target:
    """One scrape target: ``host:port`` of a stage's ``/metrics`` and its component label."""

    address: str
    component: str


class PrometheusServer:
    """Runs ``prometheus`` scraping ``targets`` every ``scrape_interval_s`` as job ``newswatch``.

    The job name and the ``component`` label match what the chart's ServiceMonitor produces,
    so the dashboard's and the rules' selectors apply unchanged.
    """

    def __init__(
        self,
        targets: list[Target],
        workdir: Path,
        scrape_interval_s: int = 1,
        rule_files: list[Path] | None = None,
    ) -> None:
        self.targets = targets
        self.rule_files = rule_files or []
        self.workdir = workdir
        self.scrape_interval_s = scrape_interval_s
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Write the config, start the server and wait until it is ready."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is missing: run 'make system-deps' (Debian package prometheus)")
        config = {
            "global": {
                "scrape_interval": f"{self.scrape_interval_s}s",
                "evaluation_interval": f"{self.scrape_interval_s}s",
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": "newswatch",
                    "static_configs": [
                        {"targets": [t.address], "labels": {"component": t.component}} for t in self.targets
                    ],
                }
            ],
        }
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self._log = (self.workdir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = self._proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {proc.returncode}: {self.log_tail()}")
            return http_ok(f"{self.url}/-/ready")

        try:
            wait_until_sync(ready, timeout_s, "prometheus to be ready", interval_s=0.1, detail=self.log_tail)
        except AssertionError:
            self.stop()
            raise RuntimeError(f"prometheus not ready within {timeout_s} s: {self.log_tail()}") from None

    def stop(self) -> None:
        """Terminate the server; a no-op when stopped."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, timeout_s=15)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 2000) -> str:
        """The end of the server's log."""
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """GET an API path; returns ``data`` or raises :class:`QueryError` with Prometheus's message."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}") from None
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (raises :class:`QueryError` on invalid PromQL)."""
        data = self.api("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, seconds: int, step_s: int = 1) -> list[dict[str, Any]]:
        """Range query over the last ``seconds`` (as a Grafana time-series panel does)."""
        end = time.time()
        data = self.api(
            "/api/v1/query_range", query=expr, start=str(end - seconds), end=str(end), step=f"{step_s}s"
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its ``health`` and ``lastError``."""
        data = self.api("/api/v1/rules")
        return [r for g in data["groups"] for r in g["rules"]]

    def targets_health(self) -> dict[str, str]:
        """``component -> health`` of every active target."""
        data = self.api("/api/v1/targets")
        return {t["labels"]["component"]: t["health"] for t in data["activeTargets"]}

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
