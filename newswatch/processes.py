"""Stopping child processes (the embedded broker, stage subprocesses of the demo and tests)."""

from __future__ import annotations

import subprocess
from typing import Any

__all__ = ["stop_process"]


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 10.0, kill: bool = False) -> int:
    """Stop ``proc`` and return its exit code; a no-op for a process that already exited.

    Sends SIGTERM (SIGKILL with ``kill``), waits up to ``timeout_s`` and kills it if it is
    still running then.
    """
    if proc.poll() is None:
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)
