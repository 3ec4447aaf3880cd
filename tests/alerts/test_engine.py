"""The decision layer: hysteresis, cooldown, warm-up, support, rate cap, in-progress surges."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from newswatch.alerts.engine import AlertEngine
from newswatch.alerts.events import AlertEvent
from newswatch.io.schemas import WindowStat
from newswatch.metrics import Metrics
from newswatch.settings.alerts import AlertSettings

T0 = 1_700_000_000_000
MIN = 60_000


def stat(i: int, count: int, neg: float = 0.2, key: str = "$NVDA", kind: str = "entity") -> WindowStat:
    return WindowStat(
        kind=kind,  # type: ignore[arg-type]
        key=key,
        window="tumbling_60000",
        start_ms=T0 + i * MIN,
        end_ms=T0 + (i + 1) * MIN,
        count=count,
        mean_score=-neg,
        negative_share=neg,
        examples=(
            {"id": f"{i}-a", "text": "meh", "url": None, "score": -0.1},
            {"id": f"{i}-b", "text": "crash", "url": "https://x/b", "score": -0.99},
            {"id": f"{i}-c", "text": "bad", "url": None, "score": -0.7},
            {"id": f"{i}-d", "text": "worse", "url": None, "score": -0.8},
        ),
    )


def baseline(rng: random.Random, n: int = 60, level: int = 40) -> Iterator[WindowStat]:
    for i in range(n):
        yield stat(i, level + rng.randint(-4, 4))


def run(engine: AlertEngine, stats: list[WindowStat]) -> list[AlertEvent]:
    out: list[AlertEvent] = []
    for s in stats:
        out.extend(engine.observe(s, final=True))
    return out


#: These tests specify the decision layer, which is the same for every detector; they pin the
#: detector whose scores they were written against (a robust z-score warms up in a few windows).
DETECTOR = "robust_zscore"


#: Labels of the open-alert gauge of the $NVDA volume series.
OPEN = {"kind": "entity", "key": "$NVDA", "window": "tumbling_60000", "signal": "volume"}


def volume_engine(metrics: Metrics | None = None, **kw: object) -> AlertEngine:
    return AlertEngine(
        AlertSettings(detector=DETECTOR, signals=("volume",), **kw),  # type: ignore[arg-type]
        metrics,
    )


def test_surge_fires_with_context_then_resolves(metrics: Metrics) -> None:
    engine = volume_engine(metrics)
    rng = random.Random(1)
    events = run(engine, list(baseline(rng)))
    assert events == []
    events = run(engine, [stat(60, 160), stat(61, 170), stat(62, 165)])
    assert [e.status for e in events] == ["firing"]
    assert metrics.registry.get_sample_value("newswatch_alerts_open", OPEN) == 1
    fired = events[0]
    assert fired.key == "$NVDA" and fired.signal == "volume" and fired.kind == "entity"
    assert fired.observed == pytest.approx(160, abs=1) and fired.baseline == pytest.approx(40, abs=6)
    assert [e["id"] for e in fired.examples] == ["60-b", "60-d", "60-c"], "top-3 most negative examples"
    assert "var-key=%24NVDA" in fired.dashboard_url
    assert fired.severity == "critical"  # a 4x surge is far beyond z = 3
    events = run(engine, [stat(63 + i, 40) for i in range(3)])
    assert [e.status for e in events] == ["resolved"]
    resolved = events[0]
    assert resolved.fingerprint == fired.fingerprint and resolved.episode_start_ms == fired.episode_start_ms
    assert resolved.idempotency_key != fired.idempotency_key
    assert metrics.registry.get_sample_value("newswatch_alerts_fired_total", {"severity": "critical"}) == 1
    assert metrics.registry.get_sample_value("newswatch_alerts_resolved_total", {"severity": "critical"}) == 1
    assert metrics.registry.get_sample_value("newswatch_alerts_open", OPEN) is None  # resolved: gone


def test_flapping_series_fires_once_not_ten_times() -> None:
    """Ten surges of two windows each, two calm windows apart, with default settings: one alert.

    Hysteresis keeps the alert firing through short calm spells (resolving takes three cool
    windows in a row), and cooldown keeps a just-resolved key quiet.
    """
    engine = volume_engine()
    stats = list(baseline(random.Random(2)))
    i = 60
    for _ in range(10):
        stats += [stat(i, 75), stat(i + 1, 75), stat(i + 2, 40), stat(i + 3, 40)]
        i += 4
    stats += [stat(i + j, 40) for j in range(3)]
    events = run(engine, stats)
    assert [e.status for e in events] == ["firing", "resolved"], [e.summary() for e in events]
    # Without hysteresis and cooldown the same series pages again and again:
    naive = volume_engine(cooldown_s=0, resolve_windows=1, resolve_score=0.6, fire_windows=1)
    assert len([e for e in run(naive, stats) if e.status == "firing"]) >= 8


def test_cooldown_keeps_a_resolved_key_quiet() -> None:
    engine = volume_engine(cooldown_s=600)
    stats = list(baseline(random.Random(9)))
    stats += [stat(60, 200), stat(61, 200)] + [stat(62 + j, 40) for j in range(3)]  # fire, resolve at 65
    stats += [stat(65, 200), stat(66, 200)]  # within 10 minutes: suppressed
    fired = [e for e in run(engine, stats) if e.status == "firing"]
    assert len(fired) == 1
    later = [stat(80 + j, 40) for j in range(3)] + [stat(83, 200), stat(84, 200)]
    assert [e.status for e in run(engine, later) if e.status == "firing"] == ["firing"]


def test_minimum_support_and_warmup_suppress(metrics: Metrics) -> None:
    engine = AlertEngine(
        AlertSettings(detector=DETECTOR, signals=("negative_share",), min_support=10, warmup_windows=10),
        metrics,
    )
    # Early: a surge in the bearish share during warm-up does not alert.
    events = run(engine, [stat(i, 30, 0.2) for i in range(5)] + [stat(5, 30, 0.9), stat(6, 30, 0.9)])
    assert events == []
    assert metrics.registry.get_sample_value("newswatch_alerts_suppressed_total", {"reason": "warmup"}) >= 1
    rng = random.Random(3)
    events = run(engine, [stat(i, 30, 0.2 + rng.uniform(-0.03, 0.03)) for i in range(7, 60)])
    # Later: 4 of 5 posts bearish is not enough support.
    events = run(engine, [stat(60, 5, 0.8), stat(61, 5, 0.8)])
    assert events == []
    assert metrics.registry.get_sample_value("newswatch_alerts_suppressed_total", {"reason": "support"}) >= 1
    events = run(engine, [stat(62, 40, 0.8), stat(63, 40, 0.8)])
    assert [e.status for e in events] == ["firing"] and events[0].signal == "negative_share"


def test_in_progress_window_fires_before_it_closes() -> None:
    """A surge big enough alerts on the in-progress update, without waiting for the final window."""
    engine = volume_engine()
    run(engine, list(baseline(random.Random(4))))
    partial = stat(60, 400)
    events = engine.observe(partial, final=False)
    assert [e.status for e in events] == ["firing"]
    # Further updates and the final record of the same window do not fire again.
    assert engine.observe(stat(60, 450), final=False) == []
    assert engine.observe(stat(60, 500), final=True) == []


def test_in_progress_updates_of_one_window_count_once() -> None:
    """fire_windows counts distinct windows: three updates of one moderate window are not three windows."""
    engine = volume_engine(fire_windows=2)
    run(engine, list(baseline(random.Random(5))))
    for count in (50, 51, 52):
        assert engine.observe(stat(60, count), final=False) == []
    events = engine.observe(stat(61, 52), final=False)
    assert [e.status for e in events] == ["firing"]


def test_rate_cap_limits_new_alerts_per_minute(metrics: Metrics) -> None:
    engine = volume_engine(metrics, max_alerting_keys_per_min=3)
    keys = [f"$K{i}" for i in range(8)]
    rng = random.Random(6)
    for i in range(60):
        for k in keys:
            engine.observe(stat(i, 40 + rng.randint(-4, 4), key=k), final=True)
    fired = []
    for k in keys:
        fired += engine.observe(stat(60, 400, key=k), final=True)
    assert len(fired) == 3
    assert metrics.registry.get_sample_value("newswatch_alerts_suppressed_total", {"reason": "rate_cap"}) == 5


def test_duplicate_final_windows_are_learned_once() -> None:
    """At-least-once upstream: a replayed final window does not move the baseline twice."""
    a, b = volume_engine(), volume_engine()
    stats = list(baseline(random.Random(7)))
    run(a, stats)
    run(b, [s for s in stats for _ in range(2)])
    for signal in ("volume",):
        assert a.last_score("entity", "$NVDA", "tumbling_60000", signal) == pytest.approx(
            b.last_score("entity", "$NVDA", "tumbling_60000", signal)
        )
    s = stat(60, 90)
    assert run(a, [s]) == run(b, [s])


def test_ignores_unwatched_windows_and_kinds() -> None:
    engine = AlertEngine(AlertSettings(kinds=("topic",)))
    assert engine.observe(stat(0, 10)) == []  # entity is not watched
    other = WindowStat("topic", "M&A", "hopping_300000_60000", T0, T0 + 300_000, 10, 0.0, 0.1)
    assert engine.observe(other) == []


def test_fingerprint_is_stable_across_engines() -> None:
    e1, e2 = volume_engine(), volume_engine()
    stats = [*baseline(random.Random(8)), stat(60, 400)]
    f1 = run(e1, stats)
    f2 = run(e2, stats)
    assert len(f1) == 1 and f1[0].fingerprint == f2[0].fingerprint
    assert AlertEvent.from_json(f1[0].to_json()) == f1[0]


def test_alert_of_a_key_that_falls_silent_resolves() -> None:
    """After a surge a key may get no posts at all (no windows): its alert still resolves."""
    engine = volume_engine()
    rng = random.Random(10)
    for i in range(60):
        run(engine, [stat(i, 40 + rng.randint(-4, 4)), stat(i, 40, key="$SPY")])
    fired = run(engine, [stat(60, 300), stat(60, 40, key="$SPY")])
    assert [(e.key, e.status) for e in fired] == [("$NVDA", "firing")]
    events: list[AlertEvent] = []
    for i in range(61, 70):  # only $SPY keeps getting windows: the event-time clock moves on
        events += run(engine, [stat(i, 40, key="$SPY")])
    assert [(e.key, e.status) for e in events] == [("$NVDA", "resolved")]
    resolved = events[0]
    assert resolved.fingerprint == fired[0].fingerprint and resolved.observed == 0 and resolved.support == 0
    assert resolved.end_ms <= T0 + 67 * MIN, "resolved within resolve_windows + 2 windows of silence"


def test_hot_windows_with_a_gap_are_not_consecutive() -> None:
    engine = volume_engine(fire_windows=2)
    run(engine, list(baseline(random.Random(12))))
    # Hot (z > 3) but beyond protect_z, so not learned: the baseline stays put.
    assert engine.observe(stat(60, 60), final=True) == []
    # The next hot window comes 5 minutes later: a new run, not the second of the first.
    assert engine.observe(stat(65, 60), final=True) == []
    assert [e.status for e in engine.observe(stat(66, 60), final=True)] == ["firing"]


def test_a_replay_rebuilds_state_without_counting_alerts(metrics: Metrics) -> None:
    """Transitions seen while replaying on start-up change the state but not the counters."""
    engine = volume_engine(metrics)
    with engine.replaying():
        run(engine, list(baseline(random.Random(1))))
        replayed = run(engine, [stat(60, 160), stat(61, 170), stat(62, 165)])
    assert [e.status for e in replayed] == ["firing"]
    assert engine.is_firing("entity", "$NVDA", "tumbling_60000", "volume")
    assert metrics.registry.get_sample_value("newswatch_alerts_open", OPEN) == 1  # state, rebuilt
    assert metrics.registry.get_sample_value("newswatch_alerts_fired_total", {"severity": "critical"}) in (
        None,
        0,
    )
    events = run(engine, [stat(63 + i, 40) for i in range(3)])
    assert [e.status for e in events] == ["resolved"]
    assert metrics.registry.get_sample_value("newswatch_alerts_resolved_total", {"severity": "critical"}) == 1
