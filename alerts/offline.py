"""Offline detection over a ``timestamp,value`` series (``newswatch detect``).

Each row is one final window of one series; the same :class:`~newswatch.alerts.engine.AlertEngine`
(detector + decision layer) as the streaming stage scores it. Rows may be irregularly
spaced; the detector learns the series' own scale, and seasonality uses the timestamps.
There is no post count in a generic series, so the minimum-support guard is passed.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from newswatch.alerts.detectors.base import Direction
from newswatch.alerts.engine import AlertEngine
from newswatch.alerts.exceptions import SeriesError
from newswatch.settings.alerts import AlertSettings
from newswatch.timeparse import epoch_ms, parse_iso_or_none

__all__ = ["Row", "SeriesModel", "detect_series", "is_count_series", "parse_timestamp", "read_series"]


@dataclass(frozen=True, slots=True)
class Row:
    """One input row: the timestamp as written, in epoch ms, and the value."""

    raw_ts: str
    ts_ms: int
    value: float


def parse_timestamp(raw: str) -> int:
    """Epoch milliseconds of an ISO-8601 timestamp or an epoch number (s or ms).

    >>> parse_timestamp("2024-01-01T00:01:00Z"), parse_timestamp("1704067260")
    (1704067260000, 1704067260000)
    >>> parse_timestamp("1704067260000")
    1704067260000
    """
    text = raw.strip()
    try:
        num = float(text)
    except ValueError:
        parsed = parse_iso_or_none(text)
        if parsed is None:
            raise SeriesError(f"cannot read timestamp {text!r}: use ISO-8601 or epoch seconds") from None
        return epoch_ms(parsed)
    if not math.isfinite(num):
        raise SeriesError(f"cannot read timestamp {text!r}")
    return int(num * 1000) if abs(num) < 1e11 else int(num)


def read_series(path: Path) -> list[Row]:
    """Read a ``timestamp,value`` CSV (header optional; extra columns ignored)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            lines = list(csv.reader(fh))
    except OSError as exc:
        raise SeriesError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SeriesError(f"{path} is not UTF-8 text") from None
    rows: list[Row] = []
    for lineno, cells in enumerate(lines, start=1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) < 2:
            raise SeriesError(f"{path}:{lineno}: expected 'timestamp,value', got {','.join(cells)!r}")
        if lineno == 1 and cells[0].strip().lower() in ("timestamp", "time", "ts", "date", "datetime"):
            continue
        try:
            value = float(cells[1])
        except ValueError:
            raise SeriesError(f"{path}:{lineno}: value {cells[1]!r} is not a number") from None
        try:
            ts = parse_timestamp(cells[0])
        except SeriesError as exc:
            raise SeriesError(f"{path}:{lineno}: {exc}") from None
        rows.append(Row(cells[0].strip(), ts, value))
    if not rows:
        raise SeriesError(f"{path} has no rows; expected a 'timestamp,value' CSV")
    return rows


SeriesModel = Literal["auto", "level", "count"]


def is_count_series(rows: list[Row]) -> bool:
    """Whether every value is a non-negative whole number (posts per window, requests per minute…).

    >>> is_count_series([Row("a", 0, 3.0), Row("b", 1, 0.0)]), is_count_series([Row("a", 0, 2.5)])
    (True, False)
    """
    return bool(rows) and all(r.value >= 0 and float(r.value).is_integer() for r in rows)


def detect_series(
    rows: Iterable[Row],
    detector: str | None = None,
    settings: AlertSettings | None = None,
    direction: Direction = "both",
    params: dict[str, Any] | None = None,
    model: SeriesModel = "auto",
) -> dict[str, Any]:
    """Run the engine over ``rows`` and build the ``newswatch detect`` JSON object.

    ``model`` says what the values are: ``"count"`` (modelled as counts, like the stream's
    volume signal), ``"level"`` (a generic measurement) or ``"auto"`` (counts when every
    value is a non-negative whole number).
    """
    rows = list(rows)
    if model == "auto":
        model = "count" if is_count_series(rows) else "level"
    signal = "volume" if model == "count" else "series"
    base = settings or AlertSettings()
    name = detector or base.detector
    detector_params: dict[str, Any] = {**base.detector_params, **(params or {}), "direction": direction}
    s = base.model_copy(
        update={
            "detector": name,
            "detector_params": detector_params,
            "windows": ("series",),
            "signals": (signal,),
            "max_alerting_keys_per_min": 1_000_000,
        }
    )
    engine = AlertEngine(s)
    order = sorted(range(len(rows)), key=lambda i: rows[i].ts_ms)
    gaps = sorted(b.ts_ms - a.ts_ms for a, b in itertools.pairwise(rows) if b.ts_ms > a.ts_ms)
    step_ms = gaps[len(gaps) // 2] if gaps else 1
    scores: list[dict[str, Any]] = [{} for _ in rows]
    alerts: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for i in order:
        row = rows[i]
        if not math.isfinite(row.value):
            raise SeriesError(f"value at {row.raw_ts} is not finite")
        engine.observe_value(
            kind="global",
            key="series",
            window="series",
            signal=signal,
            value=row.value,
            start_ms=row.ts_ms,
            end_ms=row.ts_ms + step_ms,
            support=s.min_support,
        )
        score = engine.last_score("global", "series", "series", signal)
        alert = engine.is_firing("global", "series", "series", signal)
        scores[i] = {
            "timestamp": row.raw_ts,
            "value": row.value,
            "anomaly_score": round(score, 6),
            "alert": alert,
        }
        if alert:
            if current is None:
                current = {"start": row.raw_ts, "end": row.raw_ts, "peak_score": score}
                alerts.append(current)
            current["end"] = row.raw_ts
            current["peak_score"] = round(max(current["peak_score"], score), 6)
        else:
            current = None
    return {"detector": name, "model": model, "scores": scores, "alerts": alerts}
