"""stop_process: SIGTERM first, SIGKILL when ignored, a no-op for an exited process."""

from __future__ import annotations

import signal
import subprocess
import sys

from newswatch.processes import stop_process


def _child(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"  # handlers are installed
    return proc


def test_terminates_a_cooperative_child() -> None:
    proc = _child("import time; print('ready', flush=True); time.sleep(60)")
    assert stop_process(proc) == -signal.SIGTERM
    assert stop_process(proc) == -signal.SIGTERM  # already exited: a no-op


def test_kills_a_child_that_ignores_sigterm() -> None:
    proc = _child(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    assert stop_process(proc, timeout_s=0.5) == -signal.SIGKILL
