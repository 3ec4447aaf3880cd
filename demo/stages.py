"""Stages as child processes: each ``newswatch`` command with its own metrics port and log.

What the benchmarks that run the whole pipeline (``bench/soak.py``, ``bench/pages.py``)
share: start a stage as ``python -m newswatch.cli.main --config FILE <args>`` with the
``NEWSWATCH_*`` environment cleared (the config file is the only source), read its
counters from ``/metrics`` and its ``/readyz``, and stop it on exit.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from newswatch.demo.broker import free_port
from newswatch.processes import stop_process

__all__ = ["StageProcess", "counter", "counter_by", "is_ready", "rss_mb", "stage_process"]


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


def counter(port: int, name: str, stage: str) -> float:
    """Sum of a stage's counter ``name`` over its other labels (NaN if /metrics is unreachable)."""
    text = _scrape(port)
    if text is None:
        return float("nan")
    pattern = rf'^{name}\{{[^}}]*stage="{stage}"[^}}]*\}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def counter_by(port: int, name: str, label: str) -> dict[str, float]:
    """Counter ``name`` summed per value of ``label`` (e.g. suppressed alerts per reason)."""
    text = _scrape(port)
    if text is None:
        return {}
    out: dict[str, float] = defaultdict(float)
    for labels, value in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        m = re.search(rf'{label}="([^"]*)"', labels)
        if m:
            out[m.group(1)] += float(value)
    return dict(out)


def is_ready(port: int) -> bool:
    """Whether the stage on ``port`` answers ``/readyz`` with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (NaN once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` has used (NaN once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class StageProcess:
    """A running stage: its process, metrics port, log file and the ``stage`` label of its metrics."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def metric(self, name: str, stage: str | None = None) -> float:
        """Counter ``name`` of this stage (or of the ``stage`` label given)."""
        return counter(self.port, name, stage or self.name)

    def ready(self) -> bool:
        """Whether it answers ``/readyz``."""
        return is_ready(self.port)


@contextlib.contextmanager
def stage_process(
    name: str, args: Sequence[str], config: Path, workdir: Path, metric_stage: str | None = None
) -> Iterator[StageProcess]:
    """``newswatch --config CONFIG <args>`` as a child process logging to ``workdir/<name>.log``.

    ``metric_stage`` is the ``stage`` label its metrics carry (``name`` by default).
    """
    port = free_port()
    log = workdir / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
    env["NEWSWATCH_METRICS_PORT"] = str(port)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "newswatch.cli.main", "--config", str(config), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield StageProcess(metric_stage or name, proc, port, log)
    finally:
        stop_process(proc, timeout_s=30)
