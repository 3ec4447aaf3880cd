"""One log format for every stage (issue 18 point 5): human by default, ``--log-format json`` one
object per line, faust's and aiokafka's own records included; checked on real processes."""

from __future__ import annotations

import io
import json
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from newswatch import logs
from newswatch.demo.stages import counter, is_ready
from newswatch.processes import stop_process
from tests.support.kafka import post_json
from tests.support.poll import wait_until_sync
from tests.support.settings import aggregate_settings, stage_env

KEYS = {"ts", "stage", "level", "logger", "message"}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    nw_level = logging.getLogger("newswatch").level
    yield
    logs.configure(fmt="human", force=True)  # back to the default format and no stage
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("newswatch").setLevel(nw_level)


def test_json_records_carry_the_stage_and_the_context(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure(stage="classify", fmt="json", stream=out, force=True)
    logging.getLogger("newswatch.x").info("assigned %d", 3, extra={"partitions": [0, 1, 2]})
    logging.getLogger("aiokafka.consumer").info("not shown: libraries log from WARNING by default")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("faust.worker").exception("crashed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["stage"] == "classify" and first["level"] == "INFO" and first["logger"] == "newswatch.x"
    assert first["message"] == "assigned 3" and first["partitions"] == [0, 1, 2]
    assert second["logger"] == "faust.worker" and "ValueError: boom" in second["exc"]


def test_the_human_format_is_one_line_with_the_stage(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure(stage="notify", fmt="human", level="DEBUG", stream=out, force=True)
    logging.getLogger("aiokafka").debug("hello %s", "there", extra={"k": 1})
    (line,) = out.getvalue().splitlines()
    assert line.endswith(" DEBUG notify aiokafka: hello there"), line


def test_configure_replaces_its_handler_and_refuses_unknown_formats(restore_logging: None) -> None:
    logs.configure(fmt="json", force=True)
    logs.configure(fmt="human")
    assert len(logging.getLogger().handlers) == 1  # its own handler replaced, not a second one
    with pytest.raises(ValueError, match="yaml"):
        logs.configure(fmt="yaml")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_classify_then_aggregate_on_default_ports_log_json_only(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """The README's order (classify, then aggregate) on their default ports, as real processes.

    Before: aggregate died with faust's OSError 98 (both on 9400), and faust wrote its own format.
    """
    # the README's default ports are what this test is about: it needs them free, not skipped
    assert _port_free(9400) and _port_free(9401), "free the default metrics ports 9400/9401 to run this test"
    settings = aggregate_settings(bootstrap, unique, tmp_path, partitions=1)
    env = stage_env(
        settings, ("kafka", "topics", "aggregate", "alerts"), NEWSWATCH_CLASSIFY_GROUP_ID=f"cl-{unique}"
    )
    env.pop("NEWSWATCH_METRICS_PORT", None)
    env["NEWSWATCH_LOG_FORMAT"] = "json"  # the environment variable; the flag on one of them
    stages = {"classify": ["classify"], "aggregate": ["--log-format", "json", "aggregate"]}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    errs = {name: tmp_path / f"{name}.err" for name in stages}
    try:
        for name, args in stages.items():
            with errs[name].open("wb") as out:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "newswatch.cli.main", "--log-level", "INFO", *args],
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                    env=env,
                )
        for name, port in (("classify", 9400), ("aggregate", 9401)):
            proc, log = procs[name], errs[name]
            wait_until_sync(
                lambda: is_ready(port) or proc.poll() is not None,  # noqa: B023 (waited for here)
                120,
                f"{name} ready on its default port {port}",
                detail=lambda: log.read_text()[-3000:],  # noqa: B023
            )
            assert proc.poll() is None, log.read_text()[-3000:]
        posts = tmp_path / "posts.jsonl"
        posts.write_text("\n".join(post_json(f"log-{i}", i).decode() for i in range(10)) + "\n")
        replay = [sys.executable, "-m", "newswatch.cli.main", "replay", str(posts), "--retime", "--quiet"]
        subprocess.run(replay, env=env, check=True, timeout=120, capture_output=True)
        wait_until_sync(
            lambda: counter(9401, "newswatch_stream_messages_consumed_total", "aggregate") >= 10,
            120,
            "the aggregator to take the 10 scored posts",
        )
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        for name, proc in procs.items():
            assert proc.wait(timeout=60) == 0, errs[name].read_text()[-3000:]
    finally:
        for proc in procs.values():
            stop_process(proc, timeout_s=30)

    for name, path in errs.items():
        records = []
        for line in path.read_text().splitlines():
            record = json.loads(line)  # every line is one JSON object
            assert set(record) >= KEYS, line
            assert record["stage"] == name, line
            records.append(record)
        loggers = {r["logger"].split(".")[0] for r in records}
        assert "aiokafka" in loggers, (name, loggers)
        if name == "aggregate":
            assert loggers & {"faust", "mode"}, loggers  # faust's own records, in the same format
        started = [r for r in records if r["message"].startswith(f"{name}: metrics on ")]
        assert started and started[0]["metrics_url"].endswith(
            f":{9400 if name == 'classify' else 9401}/metrics"
        )


def test_an_uncaught_exception_is_one_json_record() -> None:
    code = "from newswatch import logs; logs.configure(fmt='json', stage='x'); raise RuntimeError('boom')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    record = json.loads(line)
    assert record["level"] == "CRITICAL" and record["stage"] == "x"
    assert record["exc"].endswith("RuntimeError: boom")
