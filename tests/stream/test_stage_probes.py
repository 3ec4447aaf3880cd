"""What the benchmarks read about a process from /proc: CPU seconds and resident memory."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

from newswatch.demo.stages import cpu_s, rss_mb


def test_cpu_seconds_grow_with_work_and_not_with_sleep() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        asleep = cpu_s(child.pid)
        mine = cpu_s(os.getpid())
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:  # 0.3 s of this process's CPU
            pass
        assert cpu_s(os.getpid()) - mine >= 0.25
        assert cpu_s(child.pid) - asleep < 0.05
        assert rss_mb(child.pid) > 1.0
    finally:
        child.kill()
        child.wait()
    assert math.isnan(cpu_s(child.pid)) and math.isnan(rss_mb(child.pid))
