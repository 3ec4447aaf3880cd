"""Labelled detection benchmark: synthetic finance streams with injected incidents.

A secondary check only: streams the project generates itself tend to reward what the
project already does. Detectors are chosen on real series (``bench/nab.py``); where the two
disagree, the real one decides.

The generator takes its shape from the real stocknet tweet stream
(``../shared/data/stocknet_tweets/stocknet_tweets_2014_2016.csv``, deduplicated on
``tweet_id``): the hour-of-day and day-of-week profile, the day-to-day burstiness
(gamma-distributed day factors with the dispersion fitted to stocknet's daily counts)
and the hour-to-hour burstiness within a day (fitted likewise). Per-key volumes are
scaled to a streaming service's rates (a few to tens of posts per minute at peak).
Incidents of four types and varying size and duration are injected: ``spike``,
``ramp``, ``level_shift`` and ``negative_flip`` (the bearish share jumps at flat volume).

Every detector runs through the same decision layer (:class:`newswatch.alerts.engine.AlertEngine`
with default settings) on 1-minute final windows, two signals per key (volume,
negative share). An incident is detected when a firing alert of its key starts
between its start and 10 minutes after its end; delay is firing window end minus
incident start. Precision counts firing alerts that match an incident.

Usage: ``python bench/detect.py [--keys 12] [--days 8] [--seed 1] [--json]``. A progress
bar goes to stderr; with ``--json`` the last stdout line is the JSON summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from newswatch.alerts.engine import AlertEngine
from newswatch.settings.alerts import AlertSettings

DATA = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "stocknet_tweets"
STOCKNET = DATA / "stocknet_tweets_2014_2016.csv"
DETECTORS = ("likelihood", "robust_zscore", "robust_cusum", "cusum")
BASELINES = ("fixed_threshold", "three_sigma")
DEFAULT = AlertSettings().detector
MATCH_AFTER_MS = 10 * 60_000
KINDS = ("spike", "ramp", "level_shift", "negative_flip")


@dataclass(frozen=True)
class Profile:
    """Shape of the real stream: hourly and weekday profiles, day and hour burstiness."""

    hour: tuple[float, ...]
    weekday: tuple[float, ...]
    day_shape: float  # gamma shape of the day factor
    hour_sigma: float  # sd of the log within-day factor beyond Poisson noise


@dataclass(frozen=True)
class Incident:
    """One injected incident."""

    key: str
    kind: str
    start_ms: int
    end_ms: int
    size: float


def _gamma_shape(values: list[float]) -> float:
    """Method-of-moments gamma shape of multiplicative factors with mean 1."""
    mean = statistics.fmean(values)
    var = statistics.pvariance(values)
    return max(1.0, mean * mean / var) if var > 0 else 100.0


def load_profile(path: Path) -> Profile:
    """Fit the stream profile from stocknet (deduplicated on tweet_id)."""
    seen: set[str] = set()
    per_hour: Counter[tuple[str, int]] = Counter()
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["tweet_id"] in seen:
                continue
            seen.add(row["tweet_id"])
            t = datetime.fromisoformat(row["created_at"].replace("Z", "+00:00"))
            per_hour[(t.date().isoformat(), t.hour)] += 1
    days = sorted({d for d, _ in per_hour})
    hour_tot = [sum(per_hour[(d, h)] for d in days) for h in range(24)]
    hour = [h / statistics.fmean(hour_tot) for h in hour_tot]
    wd_tot = [0.0] * 7
    wd_n = [0] * 7
    daily = {d: sum(per_hour[(d, h)] for h in range(24)) for d in days}
    for d in days:
        wd = datetime.fromisoformat(d).weekday()
        wd_tot[wd] += daily[d]
        wd_n[wd] += 1
    wd_mean = [wd_tot[i] / max(1, wd_n[i]) for i in range(7)]
    weekday = [w / statistics.fmean(wd_mean) for w in wd_mean]
    # Day factors: daily count over its weekday expectation.
    day_factors = [daily[d] / wd_mean[datetime.fromisoformat(d).weekday()] for d in days]
    # Within-day burstiness: robust (MAD) spread of log hour factors on busy days, with the
    # Poisson part removed, so a few news storms in the data do not count as everyday noise.
    logs: list[float] = []
    poisson_var: list[float] = []
    for d in days:
        for h in range(24):
            expected = daily[d] * hour[h] / 24
            if expected >= 10 and per_hour[(d, h)] > 0:
                logs.append(math.log(per_hour[(d, h)] / expected))
                poisson_var.append(1 / expected)
    med = statistics.median(logs)
    robust_sd = 1.4826 * statistics.median(abs(v - med) for v in logs)
    hour_sigma = math.sqrt(max(0.0, robust_sd**2 - statistics.fmean(poisson_var)))
    return Profile(tuple(hour), tuple(weekday), _gamma_shape(day_factors), hour_sigma)


def generate(
    profile: Profile, keys: int, days: int, rng: random.Random
) -> tuple[dict[str, list[tuple[int, int, float]]], list[Incident]]:
    """Per key, a list of (start_ms, count, negative_share) 1-minute windows, and the incidents."""
    t0 = 1_704_067_200_000  # 2024-01-01T00:00Z, a Monday
    minutes = days * 1440
    series: dict[str, list[tuple[int, int, float]]] = {}
    incidents: list[Incident] = []
    for k in range(keys):
        key = f"$K{k:02d}"
        peak_rate = math.exp(rng.uniform(math.log(4), math.log(60)))  # posts/min at the busiest hour
        base_neg = rng.uniform(0.15, 0.35)
        scale = peak_rate / max(profile.hour)
        day_f = [rng.gammavariate(profile.day_shape, 1 / profile.day_shape) for _ in range(days)]
        # Within-day burstiness: a log-AR(1) modulation (correlation time about an hour) whose
        # variance matches stocknet's hour-to-hour variance beyond Poisson noise.
        sigma = profile.hour_sigma
        phi = math.exp(-1 / 60)
        mod, z = [], rng.gauss(0, sigma)
        for _ in range(minutes):
            z = phi * z + math.sqrt(1 - phi * phi) * rng.gauss(0, sigma)
            mod.append(math.exp(z - sigma * sigma / 2))
        neg_day = [min(0.9, max(0.02, base_neg + rng.gauss(0, 0.03))) for _ in range(days)]
        mult = [1.0] * minutes
        neg_add = [0.0] * minutes
        # Incidents: day 0 is clean (training); then about one every 1.5 days per key.
        m = 1440 + rng.randrange(120, 600)
        while m < minutes - 240:
            kind = rng.choice(KINDS)
            if kind == "spike":
                dur, size = rng.randint(3, 12), rng.uniform(2.0, 8.0)
                for i in range(dur):
                    mult[m + i] = size
            elif kind == "ramp":
                rise, hold, size = rng.randint(20, 90), rng.randint(10, 40), rng.uniform(1.8, 4.0)
                dur = rise + hold
                for i in range(dur):
                    mult[m + i] = 1 + (size - 1) * min(1.0, (i + 1) / rise)
            elif kind == "level_shift":
                dur, size = rng.randint(60, 240), rng.uniform(1.6, 3.0)
                for i in range(dur):
                    mult[m + i] = size
            else:
                dur, size = rng.randint(15, 60), rng.uniform(0.2, 0.45)
                for i in range(dur):
                    neg_add[m + i] = size
            incidents.append(Incident(key, kind, t0 + m * 60_000, t0 + (m + dur) * 60_000, round(size, 3)))
            m += dur + rng.randint(900, 3000)
        rows: list[tuple[int, int, float]] = []
        for i in range(minutes):
            day, hour = divmod(i // 60, 24)
            weekday = day % 7
            # Day factors blend smoothly from one noon to the next (no artificial jump at midnight).
            frac = (i % 1440) / 1440 - 0.5
            other = day_f[min(days - 1, max(0, day + (1 if frac > 0 else -1)))]
            day_level = day_f[day] * (1 - abs(frac)) + other * abs(frac)
            rate = scale * profile.hour[hour] * profile.weekday[weekday] * day_level * mod[i]
            n = _poisson(rng, rate * mult[i])
            p = min(0.98, neg_day[day] + neg_add[i])
            neg = sum(1 for _ in range(n) if rng.random() < p) if n else 0
            rows.append((t0 + i * 60_000, n, neg / n if n else 0.0))
        series[key] = rows
    return series, incidents


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


def run_detector(
    name: str, series: dict[str, list[tuple[int, int, float]]], progress: Progress, task: Any
) -> list[tuple[str, int, str]]:
    """Firing alerts (key, firing time ms, signal) of one detector over every key."""
    settings = AlertSettings(
        detector=name, signals=("volume", "negative_share"), max_alerting_keys_per_min=1000
    )
    engine = AlertEngine(settings)
    fired: list[tuple[str, int, str]] = []
    for key, rows in series.items():
        for start, count, neg in rows:
            # The engine models the count (or stabilises it for detectors that cannot).
            for signal, value in (("volume", float(count)), ("negative_share", neg)):
                ev = engine.observe_value(
                    kind="entity",
                    key=key,
                    window="tumbling_60000",
                    signal=signal,
                    value=value,
                    start_ms=start,
                    end_ms=start + 60_000,
                    support=count,
                )
                if ev is not None and ev.status == "firing":
                    fired.append((key, ev.end_ms, signal))
        progress.advance(task)
    return fired


def evaluate(fired: list[tuple[str, int, str]], incidents: list[Incident]) -> dict[str, Any]:
    """Precision, recall, F1 and median delay, overall and per incident type."""
    by_key: dict[str, list[Incident]] = defaultdict(list)
    for inc in incidents:
        by_key[inc.key].append(inc)
    first: dict[Incident, int] = {}
    true_pos = 0
    hits_by_kind: Counter[str] = Counter()
    for key, at, _signal in fired:
        hit = [i for i in by_key[key] if i.start_ms <= at <= i.end_ms + MATCH_AFTER_MS]
        if hit:
            true_pos += 1
            for kind in {i.kind for i in hit}:
                hits_by_kind[kind] += 1
            for inc in hit:
                first[inc] = min(first.get(inc, at), at)
    false_alerts = len(fired) - true_pos
    precision = true_pos / len(fired) if fired else 0.0

    def summary(incs: list[Incident], tp: int, fp: int) -> dict[str, Any]:
        found = [i for i in incs if i in first]
        recall = len(found) / len(incs) if incs else 0.0
        prec = tp / (tp + fp) if tp + fp else 0.0
        delays = [(first[i] - i.start_ms) / 1000 for i in found]
        return {
            "incidents": len(incs),
            "precision": round(prec, 4),
            "recall": round(recall, 4),
            "f1": round(2 * prec * recall / (prec + recall), 4) if prec + recall else 0.0,
            "median_delay_s": _median(delays),
        }

    overall = summary(incidents, true_pos, false_alerts)
    # Per type: alerts matching that type's incidents are true positives, alerts matching no
    # incident are false positives, alerts matching only other types are left out.
    return {
        "precision": round(precision, 4),
        "recall": overall["recall"],
        "f1": overall["f1"],
        "median_delay_s": overall["median_delay_s"],
        "alerts": len(fired),
        "false_alerts": false_alerts,
        "by_type": {
            kind: summary([i for i in incidents if i.kind == kind], hits_by_kind[kind], false_alerts)
            for kind in KINDS
        },
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table (stderr) and the JSON summary (last stdout line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=12, help="Series (keys) generated.")
    parser.add_argument("--days", type=int, default=8, help="Days per series (day 0 is incident-free).")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=STOCKNET, help="stocknet tweets CSV.")
    parser.add_argument("--json", action="store_true", help="End stdout with the JSON summary line.")
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    if not args.data.is_file():
        err.print(
            f"bench/detect.py: error: {args.data} not found; pass --data PATH/stocknet_tweets_2014_2016.csv"
        )
        return 2
    t0 = time.perf_counter()
    profile = load_profile(args.data)
    rng = random.Random(args.seed)
    series, incidents = generate(profile, args.keys, args.days, rng)
    results: dict[str, dict[str, Any]] = {}
    with Progress(console=err, transient=True) as progress:
        for name in DETECTORS + BASELINES:
            task = progress.add_task(name, total=len(series))
            results[name] = evaluate(run_detector(name, series, progress, task), incidents)
    elapsed = time.perf_counter() - t0
    for name, r in results.items():
        per_type = "  ".join(
            f"{k}: P={v['precision']:.2f} R={v['recall']:.2f} d={v['median_delay_s']}s"
            for k, v in r["by_type"].items()
        )
        err.print(
            f"{name:16s} P={r['precision']:.3f} R={r['recall']:.3f} F1={r['f1']:.3f} "
            f"delay={r['median_delay_s']}s alerts={r['alerts']}  {per_type}"
        )
    err.print(
        f"{len(incidents)} incidents on {args.keys} keys x {args.days} days; profile day_shape="
        f"{profile.day_shape:.2f} hour_sigma={profile.hour_sigma:.2f}; {elapsed:.1f} s"
    )
    if args.json:
        out = {
            "default": DEFAULT,
            "detectors": {n: results[n] for n in DETECTORS},
            "baselines": {n: results[n] for n in BASELINES},
            "setup": {
                "keys": args.keys,
                "days": args.days,
                "seed": args.seed,
                "incidents": len(incidents),
                "window_s": 60,
                "elapsed_s": round(elapsed, 1),
            },
        }
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
