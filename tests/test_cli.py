"""The ``newswatch`` command line: help, and errors without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "newswatch.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_the_stages() -> None:
    out = _run("--help")
    assert out.returncode == 0
    for command in (
        "broker",
        "classify",
        "aggregate",
        "replay",
        "demo",
        "pretrain",
        "train",
        "evaluate",
        "predict",
        "notify",
    ):
        assert command in out.stdout, command


def test_bad_setting_is_one_line_without_traceback(tmp_path: Path) -> None:
    out = _run("topics", "create", env={"NEWSWATCH_KAFKA_PARTITIONS": "zero"})
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "kafka.partitions" in out.stderr


def test_missing_config_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    out = _run("--config", str(tmp_path / "missing.yaml"), "topics", "create")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "missing.yaml does not exist" in out.stderr
