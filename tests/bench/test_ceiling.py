"""``bench/ceiling.py``: the zero engine, the synthetic window records, and a quick run on the session broker.

The full run (60,000 posts through each stage with the model removed) is
``python bench/ceiling.py --json``.
"""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from types import ModuleType

import pytest

from tests.support.bench import BENCH, load_bench


@pytest.fixture(scope="module")
def bench_path() -> None:
    """``bench/`` on ``sys.path``: ``ceiling.py`` imports ``zero_engine`` as its script neighbour."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))


@pytest.fixture(scope="module")
def ceiling(bench_path: None) -> ModuleType:
    return load_bench("ceiling")


@pytest.fixture(scope="module")
def zero(bench_path: None) -> ModuleType:
    return load_bench("zero_engine")


def test_doctests(ceiling: ModuleType, zero: ModuleType) -> None:
    assert doctest.testmod(ceiling).failed == 0
    assert doctest.testmod(zero).failed == 0


def test_zero_engine_is_deterministic_and_spread(zero: ModuleType) -> None:
    engine = zero.ZeroEngine()
    texts = [f"$T{i} post number {i}" for i in range(600)]
    first, again = engine.predict(texts), engine.predict(texts)
    assert first == again
    assert len({p.topic for p in first}) == 20
    assert {p.sentiment for p in first} == {"bearish", "bullish", "neutral"}
    for p in first:
        assert -1.0 <= p.score <= 1.0 and p.error is None
        assert abs(sum(p.sentiment_probs.values()) - 1.0) < 1e-9
    assert engine.predict(["", " \n"])[0].error is not None


def test_alert_windows_are_valid_records(ceiling: ModuleType) -> None:
    from newswatch.io.schemas import WindowStat

    stats = ceiling.alert_windows(["tumbling_60000"], ["$AAPL", "$TSLA"], ["a text"], 5, 600_000)
    assert len(stats) == 24 * 5 * 2
    assert all(WindowStat.from_json(s.to_json()) == s for s in stats)
    assert [s.end_ms for s in stats] == sorted(s.end_ms for s in stats)  # time order
    assert ceiling.alert_windows(["tumbling_60000"], ["$A"], ["t"], 3, 600_000) == ceiling.alert_windows(
        ["tumbling_60000"], ["$A"], ["t"], 3, 600_000
    )


@pytest.mark.slow
def test_quick_run(bootstrap: str) -> None:
    """Every stage drains its backlog; nothing is lost; the JSON has the documented fields."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
    args = ["--quick", "--posts", "2000", "--alert-minutes", "5", "--bootstrap", bootstrap, "--json"]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "ceiling.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["benchmark"] == "ceiling"
    assert out["machine"]["cpu_count"] and out["backlog"]["posts"] == 2000
    assert set(out["classify"]) == {"batch_64", "batch_1024"}
    for run in out["classify"].values():
        assert run["lost"] == 0 and run["dead_lettered"] == 0
        assert run["scored"] == 2000 and run["scored_records"] >= 2000
        assert run["posts_per_s"] > 0 and run["drain_posts_per_s"] > 0
        assert isinstance(run["meets_target"], bool)
    assert out["lost"] == 0
    panes = out["aggregate"]["panes"]
    for agg in [out["aggregate"]["scored"]] + ([panes] if panes else []):
        assert agg["posts_per_s"] > 0 and agg["posts"] == 2000
        assert agg["committed"] >= agg["input_topic_records"] > 0
        assert agg["late"] == 0 and agg["dead_lettered"] == 0 and agg["duplicates"] == 0
        assert isinstance(agg["meets_target"], bool)
    assert out["aggregate"]["scored"]["window_records"] > 0
    alerts = out["alerts"]
    assert alerts["windows_per_s"] > 0 and alerts["window_records"] > 0 and alerts["dead_lettered"] == 0
    assert set(out["meets_target"]) == {"classify", "aggregate"}
    if panes:
        assert out["aggregate"]["panes_over_scored"] > 0
        assert panes["windows_equal_scored"], (
            f"panes mode wrote {panes['window_records']} window records, "
            f"{panes['windows']} windows; scored mode {out['aggregate']['scored']['windows']}"
        )
