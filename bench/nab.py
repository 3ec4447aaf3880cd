"""Real-series detection benchmark: the Numenta Anomaly Benchmark (NAB) subset in ``../shared/nab``.

Every series of ``../shared/nab/data`` (48 real and artificial series with labelled anomaly
windows) runs through :func:`newswatch.alerts.offline.detect_series`, the code behind
``newswatch detect --series`` (detector + decision layer, default settings, nothing tuned per
series). Two NAB-format results are written per detector and scored with NAB's own scorer
(``../shared/nab/score``):

- ``<detector>`` (NAB names have no ``_``): the ``anomaly_score`` of every row (the scorer
  picks the best threshold);
- ``<detector>Alerts``: the alert decisions as shipped, 1.0 at each alert onset row and 0
  elsewhere (what on-call receives; the threshold is then irrelevant). The decision layer
  fires at ``alerts.fire_score`` or, unset (the default), at the detector's own level
  (``fire_level`` in the summary).

Per detector it also counts alert onsets per 1,000 rows inside and outside the labelled
windows (probation period included). NAB's tenth category (realTweets) is withheld as the
held-out acceptance check and is never read here.

Usage: ``python bench/nab.py [--detectors a,b] [--baselines three_sigma,fixed_threshold]
[--out DIR] [--json]``. A progress bar goes to stderr; with ``--json`` the last stdout line
is the JSON summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from newswatch.alerts.engine import AlertEngine
from newswatch.alerts.offline import SeriesModel, detect_series, read_series
from newswatch.settings.alerts import AlertSettings

NAB = Path(__file__).resolve().parent.parent / ".." / "shared" / "nab"
BASELINES = ("three_sigma", "fixed_threshold")
#: Published detectors re-scored on this 48-series subset (``../shared/nab/README.md``).
PUBLISHED = {
    "ARTime": (72.08, 63.20, 77.37),
    "Numenta HTM": (70.93, 64.99, 75.00),
    "CAD OSE": (68.08, 64.53, 71.87),
    "KNN CAD": (55.49, 43.90, 61.49),
    "Twitter ADVec": (42.07, 32.73, 47.32),
    "windowed Gaussian": (35.00, 22.67, 41.00),
}
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def _nab_time(raw: str) -> datetime:
    return datetime.fromisoformat(raw.split(".")[0])


def series_files(root: Path = NAB) -> list[Path]:
    """Every series CSV of the NAB subset, in a stable order."""
    return sorted((root / "data").glob("*/*.csv"))


def windows_of(root: Path = NAB) -> dict[str, list[tuple[datetime, datetime]]]:
    """Labelled anomaly windows per ``<category>/<file>.csv``."""
    raw = json.loads((root / "labels" / "combined_windows.json").read_text())
    return {k: [(_nab_time(a), _nab_time(b)) for a, b in v] for k, v in raw.items()}


def run_series(
    path: Path,
    detector: str,
    windows: list[tuple[datetime, datetime]],
    params: dict[str, Any],
    model: SeriesModel = "auto",
) -> dict[str, Any]:
    """Detect over one series; the score and onset rows plus in/out-of-window onset counts."""
    rows = read_series(path)
    settings = AlertSettings(detector=detector)
    result = detect_series(rows, settings=settings, params=params, model=model)
    scored = result["scores"]
    labels: list[int] = []
    onsets: list[float] = []
    inside = outside = rows_in = 0
    firing = False
    for entry in scored:
        t = _nab_time(entry["timestamp"])
        label = int(any(a <= t <= b for a, b in windows))
        labels.append(label)
        rows_in += label
        onset = entry["alert"] and not firing
        firing = entry["alert"]
        onsets.append(1.0 if onset else 0.0)
        if onset:
            if label:
                inside += 1
            else:
                outside += 1
    return {
        "rows": [(e["timestamp"], e["value"], e["anomaly_score"]) for e in scored],
        "labels": labels,
        "onsets": onsets,
        "onsets_inside": inside,
        "onsets_outside": outside,
        "rows_inside": rows_in,
        "rows_outside": len(scored) - rows_in,
    }


def _write(out: Path, name: str, rel: Path, rows: list[tuple[str, float, float]], labels: list[int]) -> None:
    target = out / name / rel.parent / f"{name}_{rel.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value", "anomaly_score", "label"])
        for (ts, value, score), label in zip(rows, labels, strict=True):
            w.writerow([ts, value, score, label])


def score(out: Path, name: str, root: Path = NAB) -> dict[str, float]:
    """NAB's three profile scores of ``out/name`` (runs ``../shared/nab/score``)."""
    proc = subprocess.run([str(root / "score"), str(out), name], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"NAB scorer failed for {name}: {proc.stderr.strip()[-2000:]}")
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    return {p: float(last[p]) for p in PROFILES}


def result_name(detector: str, alerts: bool = False) -> str:
    """The name NAB files a detector's results under: NAB splits names at ``_``, so none may have one."""
    return detector.replace("_", "") + ("Alerts" if alerts else "")


_Job = tuple[str, str, str, list[tuple[datetime, datetime]], dict[str, Any], SeriesModel]


def _job(args: _Job) -> tuple[str, str, Any]:
    detector, path, rel, windows, params, model = args
    return detector, rel, run_series(Path(path), detector, windows, params, model)


def benchmark(
    detectors: list[str],
    out: Path,
    params: dict[str, Any] | None = None,
    model: SeriesModel = "auto",
    workers: int = 2,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run ``detectors`` over the subset, write and score their results; the summary dict."""
    files = series_files()
    windows = windows_of()
    jobs: list[_Job] = []
    for det in detectors:
        for path in files:
            rel = path.relative_to(NAB / "data")
            jobs.append((det, str(path), str(rel), windows.get(str(rel), []), dict(params or {}), model))
    per: dict[str, dict[str, Any]] = {
        d: {"onsets_inside": 0, "onsets_outside": 0, "rows_inside": 0, "rows_outside": 0} for d in detectors
    }
    started = time.perf_counter()
    with (
        Progress(console=console or Console(stderr=True), transient=True) as progress,
        ProcessPoolExecutor(max_workers=workers) as pool,
    ):
        task = progress.add_task("NAB series", total=len(jobs))
        for det, rel_name, res in pool.map(_job, jobs):
            rel = Path(rel_name)
            _write(out, result_name(det), rel, res["rows"], res["labels"])
            onset_rows = [(ts, v, o) for (ts, v, _), o in zip(res["rows"], res["onsets"], strict=True)]
            _write(out, result_name(det, alerts=True), rel, onset_rows, res["labels"])
            for k in per[det]:
                per[det][k] += res[k]
            progress.advance(task)
    detect_s = time.perf_counter() - started
    summary: dict[str, Any] = {
        "series": len(files),
        "rows": 0,
        "model": model,
        "detect_s": round(detect_s, 1),
        "detectors": {},
    }
    for det in detectors:
        c = per[det]
        summary["rows"] = c["rows_inside"] + c["rows_outside"]
        summary["detectors"][det] = {
            "anomaly_score": score(out, result_name(det)),
            "alerts": score(out, result_name(det, alerts=True)),
            "onsets_per_1000_rows_inside": round(1000 * c["onsets_inside"] / max(1, c["rows_inside"]), 3),
            "onsets_per_1000_rows_outside": round(1000 * c["onsets_outside"] / max(1, c["rows_outside"]), 3),
            "onsets_inside": c["onsets_inside"],
            "onsets_outside": c["onsets_outside"],
            "fire_level": AlertEngine(
                AlertSettings(detector=det, **({"detector_params": params} if params else {}))
            ).fire_level,
        }
    summary["published"] = {k: dict(zip(PROFILES, v, strict=True)) for k, v in PUBLISHED.items()}
    return summary


def _table(summary: dict[str, Any]) -> str:
    lines = [
        "| detector | score: standard | low FP | low FN | alerts: standard | low FP | low FN "
        "| onsets/1k rows in | out |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for det, r in summary["detectors"].items():
        a, b = r["anomaly_score"], r["alerts"]
        lines.append(
            f"| {det} | {a['standard']:.2f} | {a['reward_low_FP_rate']:.2f} | {a['reward_low_FN_rate']:.2f} "
            f"| {b['standard']:.2f} | {b['reward_low_FP_rate']:.2f} | {b['reward_low_FN_rate']:.2f} "
            f"| {r['onsets_per_1000_rows_inside']:.2f} | {r['onsets_per_1000_rows_outside']:.2f} |"
        )
    for name, p in summary["published"].items():
        lines.append(
            f"| {name} (published) | {p['standard']:.2f} | {p['reward_low_FP_rate']:.2f} "
            f"| {p['reward_low_FN_rate']:.2f} | | | | | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", default=None, help="Comma-separated detectors (default: alerts.detector).")
    ap.add_argument("--baselines", default=",".join(BASELINES), help="Baselines run in the same pass.")
    ap.add_argument("--params", default="{}", help="Detector parameters as a JSON object.")
    ap.add_argument(
        "--model",
        default="auto",
        choices=("auto", "level", "count"),
        help="Value model (as `detect --model`).",
    )
    ap.add_argument("--out", type=Path, default=Path("bench/.nab-results"), help="Where results go.")
    ap.add_argument("--workers", type=int, default=2, help="Processes running series in parallel.")
    ap.add_argument("--json", action="store_true", help="End with one JSON line.")
    args = ap.parse_args(argv)
    if not (NAB / "data").is_dir():
        print(f"bench/nab.py: no NAB data at {NAB.resolve()}; see ../shared/nab/README.md", file=sys.stderr)
        return 2
    chosen = args.detectors.split(",") if args.detectors else [AlertSettings().detector]
    baselines = [b for b in args.baselines.split(",") if b and b not in chosen]
    summary = benchmark(chosen + baselines, args.out, json.loads(args.params), args.model, args.workers)
    summary["default"] = AlertSettings().detector
    print(_table(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
