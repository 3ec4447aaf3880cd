"""Run every benchmark and leave one JSON file per benchmark, with the machine described.

``make bench`` runs this. Each benchmark prints one JSON line last; that line, with the
machine, the commit and the command added, is written to ``bench/out/<name>.json``, so two
runs (two commits, two machines) can be compared file by file::

    python bench/run_all.py                       # everything (about an hour on 2 cores)
    python bench/run_all.py --only classify,nab   # some of them
    python bench/run_all.py --quick               # small inputs: a check that each still runs

A benchmark that fails is reported with its exit code and the tail of its output; the
others still run, and the runner exits 1 at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Bench:
    """One benchmark: its script and arguments, full and quick."""

    name: str
    args: tuple[str, ...]
    quick: tuple[str, ...]


BENCHES = (
    Bench(
        "classify",
        ("classify.py", "--json", "--one-pass", "--one-stream"),
        ("classify.py", "--json", "--limit", "128"),
    ),
    Bench("nab", ("nab.py", "--json"), ("nab.py", "--json", "--detectors", "likelihood")),
    Bench("detect", ("detect.py", "--json"), ("detect.py", "--json", "--keys", "2", "--days", "3")),
    Bench("capacity", ("capacity.py",), ("capacity.py", "--posts", "500")),
    Bench(
        "classify_stream", ("classify_stream.py",), ("classify_stream.py", "--posts", "500", "--seconds", "5")
    ),
    Bench("window_fill", ("window_fill.py", "--json"), ("window_fill.py", "--json", "--minutes", "20")),
    Bench("soak", ("soak.py", "--duration-s", "600", "--json"), ("soak.py", "--duration-s", "30", "--json")),
    Bench("pages", ("pages.py", "--json"), ("pages.py", "--limit", "1500", "--json")),
    Bench("ceiling", ("ceiling.py", "--json"), ("ceiling.py", "--quick", "--json")),
    Bench("hotpath", ("hotpath.py",), ("hotpath.py", "--posts", "2000", "--rounds", "2")),
)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gib": mem_gib,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def run_one(bench: Bench, quick: bool, out_dir: Path) -> tuple[bool, str]:
    """Run ``bench``; write its JSON file. Returns (ok, a one-line outcome)."""
    args = bench.quick if quick else bench.args
    cmd = [sys.executable, str(HERE / args[0]), *args[1:]]
    t0 = time.monotonic()
    before = machine()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    wall = round(time.monotonic() - t0, 1)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        return False, f"{bench.name}: exit {proc.returncode} after {wall} s\n{tail}"
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return False, f"{bench.name}: last line is not JSON ({exc})"
    record = {
        "benchmark": bench.name,
        "command": " ".join(["python", f"bench/{args[0]}", *args[1:]]),
        "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": _commit(),
        "wall_s": wall,
        "machine": before,
        "result": result,
    }
    path = out_dir / f"{bench.name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return True, f"{bench.name}: {wall} s → {path.relative_to(HERE.parent)}"


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks in order; exit 1 if any failed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--only", help="Comma-separated names: " + ", ".join(b.name for b in BENCHES))
    p.add_argument("--quick", action="store_true", help="Small inputs (a check that each runs).")
    p.add_argument("--out", type=Path, default=HERE / "out", help="Folder for the JSON files.")
    args = p.parse_args(argv)
    chosen: tuple[Bench, ...] = BENCHES
    if args.only:
        names = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = names - {b.name for b in BENCHES}
        if unknown:
            p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        chosen = tuple(b for b in BENCHES if b.name in names)
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    failed = 0
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("benchmarks", total=len(chosen))
        for bench in chosen:
            bar.update(task, description=f"running {bench.name}")
            ok, line = run_one(bench, args.quick, args.out)
            failed += not ok
            console.print(("[green]ok[/] " if ok else "[red]failed[/] ") + line)
            bar.advance(task)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
