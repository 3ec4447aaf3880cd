"""Every stage takes the same connection and port flags, has its own default metrics port, and a
taken port is one line with exit code 2 (issue 18 points 1 and 4), checked on real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from newswatch.cli.main import build_parser
from newswatch.cli.options import with_stage_options
from newswatch.errors import ConfigError
from newswatch.settings import STAGE_METRICS_PORTS, load_settings

#: Each stage command and the ``stage`` its logs and metrics carry.
STAGES = {
    ("classify",): "classify",
    ("aggregate",): "aggregate",
    ("alerts", "run"): "detect",
    ("notify",): "notify",
}


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
    env["NEWSWATCH_NOTIFY_WEBHOOK_URLS"] = '["http://127.0.0.1:9/hook"]'  # notify needs a sink
    env.update(extra)
    return env


def test_the_stages_default_to_distinct_metrics_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSWATCH_METRICS_PORT", raising=False)
    metrics = load_settings().metrics
    assert metrics.port is None
    ports = {stage: metrics.port_for(stage) for stage in STAGES.values()}
    assert ports == {"classify": 9400, "aggregate": 9401, "detect": 9402, "notify": 9403}
    assert ports == STAGE_METRICS_PORTS
    monkeypatch.setenv("NEWSWATCH_METRICS_PORT", "9555")  # one number applies to whichever stage
    assert {load_settings().metrics.port_for(stage) for stage in STAGES.values()} == {9555}


@pytest.mark.parametrize("command", list(STAGES), ids=" ".join)
def test_every_stage_takes_the_connection_and_port_flags(
    command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEWSWATCH_METRICS_PORT", raising=False)
    stage = STAGES[command]
    flags = ["--bootstrap-servers", "kafka-1:9093", "--metrics-host", "0.0.0.0", "--metrics-port", "9999"]
    args = build_parser().parse_args([*command, *flags])
    settings = with_stage_options(load_settings(), args, stage)
    assert settings.kafka.bootstrap_servers == "kafka-1:9093"
    assert (settings.metrics.host, settings.metrics.port) == ("0.0.0.0", 9999)
    # without flags: the stage's own port, resolved
    bare = with_stage_options(load_settings(), build_parser().parse_args(list(command)), stage)
    assert bare.metrics.port == STAGE_METRICS_PORTS[stage]
    with pytest.raises(ConfigError, match="--metrics-port 70000 is not a TCP port"):
        with_stage_options(
            load_settings(), build_parser().parse_args([*command, "--metrics-port", "70000"]), stage
        )


@pytest.mark.parametrize("log_format", ["human", "json"])
@pytest.mark.parametrize("command", list(STAGES), ids=" ".join)
def test_a_taken_metrics_port_is_one_line_and_exit_2(
    command: tuple[str, ...], log_format: str, taken_port: int, tmp_path: object
) -> None:
    """Real processes; the faust aggregator used to crash with a traceback (OSError 98)."""
    argv = [sys.executable, "-m", "newswatch.cli.main", "--log-format", log_format, *command]
    argv += ["--bootstrap-servers", "127.0.0.1:1", "--metrics-port", str(taken_port)]
    if command == ("aggregate",):
        argv += ["--data-dir", str(tmp_path)]
    proc = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    expected = (
        f"metrics port {taken_port} is in use; pass --metrics-port N or 0 for a free one "
        "(or set NEWSWATCH_METRICS_PORT)"
    )
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    if log_format == "human":
        assert lines[0] == f"newswatch {command[0]}: error: {expected}"
    else:
        record = json.loads(lines[0])
        assert (record["level"], record["stage"], record["message"]) == ("ERROR", STAGES[command], expected)
    assert proc.stdout == ""
