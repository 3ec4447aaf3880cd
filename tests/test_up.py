"""``newswatch up``: one command starts the embedded broker and every stage; Ctrl-C stops them all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from newswatch.demo.stages import counter, is_ready
from tests.support.kafka import post_json
from tests.support.poll import wait_until_sync


def _lines(proc: subprocess.Popen[str], out: list[str]) -> threading.Thread:
    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


@pytest.mark.slow
def test_up_runs_every_stage_on_its_own_port_and_stops_them_on_interrupt(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
    env["NEWSWATCH_NOTIFY_WEBHOOK_URLS"] = '["http://127.0.0.1:9/hook"]'
    workdir = tmp_path / "stack"
    proc = subprocess.Popen(
        [sys.executable, "-m", "newswatch.cli.main", "up", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    out: list[str] = []
    _lines(proc, out)
    try:
        wait_until_sync(
            lambda: any(line.startswith("ready.") for line in out) or proc.poll() is not None,
            300,
            "newswatch up to be ready",
            detail=lambda: "\n".join(out),
        )
        assert proc.poll() is None, "\n".join(out)
        bootstrap = next(line.split()[1] for line in out if line.startswith("broker "))
        ports = {
            line.split()[0]: int(m.group(1))
            for line in out
            if (m := re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line))
        }
        assert set(ports) == {"classify", "aggregate", "detect", "notify"}, out
        assert len(set(ports.values())) == 4  # a port each: no stage can take another's

        posts = tmp_path / "posts.jsonl"
        posts.write_text("\n".join(post_json(f"up-{i}", i).decode() for i in range(30)) + "\n")
        feed_env = {
            **env,
            "NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "NEWSWATCH_KAFKA_BROKER_COMPAT": "tansu",
        }
        replay = [sys.executable, "-m", "newswatch.cli.main", "replay", str(posts), "--retime", "--quiet"]
        subprocess.run(replay, env=feed_env, check=True, timeout=120)
        wait_until_sync(
            lambda: (
                counter(ports["aggregate"], "newswatch_stream_messages_consumed_total", "aggregate") >= 30
            ),
            120,
            "the aggregator to take the 30 scored posts",
        )
        assert counter(ports["classify"], "newswatch_stream_messages_produced_total", "classify") >= 30

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0, "\n".join(out)
        assert not any(is_ready(port) for port in ports.values()), "a stage outlived newswatch up"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
