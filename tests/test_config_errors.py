"""Issue 18 point 4: configuration mistakes are one clean line and exit code 2, never ignored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from newswatch.cli.main import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_an_unknown_key_in_a_known_section_is_an_error_naming_the_closest_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "newswatch.yaml"
    config.write_text("kafka:\n  bootstrap_server: localhost:9092\n")  # was ignored with exit 0
    code, err = _run(["--config", str(config), "topics", "create"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "kafka.bootstrap_server" in err and "did you mean kafka.bootstrap_servers?" in err


def test_an_unknown_environment_variable_of_a_section_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NEWSWATCH_ALERTS_DETECTR", "likelihood")
    code, err = _run(["alerts", "detectors"], capsys)
    assert code == 2 and "NEWSWATCH_ALERTS_DETECTR" in err and "did you mean alerts.detector?" in err


def test_broken_yaml_is_one_line_with_where_it_broke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "newswatch.yaml"
    config.write_text("kafka:\n  partitions: [1, 2\n")
    code, err = _run(["--config", str(config), "topics", "create"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"config file {config} is not valid YAML: line 3" in err


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "newswatch.yaml"
    config.write_text("notify:\n  group_wait: 5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "newswatch.cli.main", "--config", str(config), "notify"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "did you mean notify.group_wait_s?" in proc.stderr
