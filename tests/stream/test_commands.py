"""The stream sub-commands as a user runs them: ``broker`` and ``topics create``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading

import pytest

from newswatch.cli.main import main
from newswatch.io.kafka import create_topics
from newswatch.settings import TopicSettings
from tests.support.settings import kafka_settings


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The first stdout line of ``proc``, or '' if none came within the timeout."""
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(timeout_s)
    return out[0].strip() if out else ""


def test_broker_command_serves_until_interrupted(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "newswatch.cli.main", "broker", "--port", "0", "--create-topics"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NEWSWATCH_KAFKA_PARTITIONS": "3"},
    )
    try:
        bootstrap = _first_line(proc, 60)
        assert bootstrap.startswith("127.0.0.1:"), (
            proc.stderr.read() if proc.poll() is not None else bootstrap
        )
        # the topics exist already: `topics create` finds them all
        assert main(["topics", "create", "--bootstrap-servers", bootstrap]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert sorted(lines) == sorted(f"{name}\texists" for name in TopicSettings().all())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_topics_create_reports_created_and_existing(
    bootstrap: str, unique: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSWATCH_TOPICS_POSTS", f"posts-{unique}")
    monkeypatch.setenv("NEWSWATCH_TOPICS_SCORED", f"scored-{unique}")
    asyncio.run(create_topics(kafka_settings(bootstrap), [f"scored-{unique}"]))
    assert main(["topics", "create", "--bootstrap-servers", bootstrap, "--partitions", "2"]) == 0
    out = capsys.readouterr().out
    assert f"posts-{unique}\tcreated" in out
    assert f"scored-{unique}\texists" in out


def test_topics_create_without_a_broker_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["topics", "create", "--bootstrap-servers", "127.0.0.1:1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot reach Kafka at 127.0.0.1:1" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
