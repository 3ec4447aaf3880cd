"""The anomaly-likelihood detector: counts as counts, level shifts re-learned, scores calibrated."""

from __future__ import annotations

import math
import random

import pytest

from newswatch.alerts.detectors import make_detector
from newswatch.alerts.detectors.likelihood import count_tail, score_to_tail
from newswatch.alerts.engine import AlertEngine
from newswatch.settings.alerts import AlertSettings

MINUTE_MS = 60_000


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def _engine() -> AlertEngine:
    return AlertEngine(AlertSettings(detector="likelihood"))


def _feed(engine: AlertEngine, counts: list[int], start_minute: int = 0) -> list[str]:
    """Feed per-minute post counts of one entity's volume; the transitions, in order."""
    out = []
    for i, count in enumerate(counts, start=start_minute):
        start = i * MINUTE_MS
        event = engine.observe_value(
            kind="entity",
            key="$TINY",
            window="tumbling_60000",
            signal="volume",
            value=float(count),
            start_ms=start,
            end_ms=start + MINUTE_MS,
            support=count,
        )
        if event is not None:
            out.append(f"{event.status}@{i}")
    return out


def test_count_tail_matches_poisson_and_negative_binomial() -> None:
    # Poisson(1): P(X >= 2) = 1 - 2/e; negative binomial with the same mean has a heavier tail.
    assert count_tail(2, 1.0) == pytest.approx(1 - 2 / math.e)
    assert count_tail(8, 1.0, dispersion=1.0) > 10 * count_tail(8, 1.0)
    # A large mean falls back on the normal tail and stays continuous with the exact sum.
    assert count_tail(60, 50.0) == pytest.approx(0.0844, abs=0.01)


def test_sparse_ticker_one_to_two_posts_does_not_alert() -> None:
    """A ticker with 0-1 posts a minute: a minute of 2 (or 3) posts is ordinary."""
    rng = random.Random(5)
    engine = _engine()
    quiet = [_poisson(rng, 0.6) for _ in range(600)]
    assert not [e for e in _feed(engine, quiet) if e.startswith("firing")]
    assert _feed(engine, [2, 1, 2, 0, 3, 1, 2, 1], start_minute=600) == []


def test_sparse_ticker_sustained_one_to_eight_alerts_and_resolves() -> None:
    """The same ticker jumping to 8 posts a minute for several minutes is an incident."""
    rng = random.Random(5)
    engine = _engine()
    assert not [e for e in _feed(engine, [_poisson(rng, 0.6) for _ in range(600)]) if "firing" in e]
    events = _feed(engine, [8] * 6, start_minute=600)
    assert events and events[0].startswith("firing") and int(events[0].split("@")[1]) <= 602
    after = _feed(engine, [_poisson(rng, 0.6) for _ in range(60)], start_minute=606)
    assert any(e.startswith("resolved") for e in after)


def test_count_model_is_what_the_engine_uses_for_volume() -> None:
    engine = _engine()
    _feed(engine, [1, 0, 1])
    series = engine._series[("entity", "$TINY", "tumbling_60000", "volume")]
    assert series.detector.model == "count" and not series.stabilise
    legacy = AlertEngine(AlertSettings(detector="robust_zscore"))
    _feed(legacy, [1, 0, 1])
    assert legacy._series[("entity", "$TINY", "tumbling_60000", "volume")].stabilise


@pytest.mark.parametrize("model", ["level", "count"])
def test_level_shift_becomes_the_new_normal_in_bounded_time(model: str) -> None:
    """After a permanent shift the score falls below the resolve level within 40 values."""
    rng = random.Random(11)
    det = make_detector("likelihood", model=model, season_s=None)

    def value(level: float) -> float:
        return float(_poisson(rng, level)) if model == "count" else rng.gauss(level, 2.0)

    for i in range(500):
        det.learn_one(value(20.0), t=60.0 * i)
    scores = []
    for i in range(500, 700):
        x = value(60.0)
        scores.append(det.score_one(x, t=60.0 * i))
        det.learn_one(x, t=60.0 * i)
    assert max(scores[:5]) >= 0.6, "the shift itself is flagged"
    settled = next(i for i in range(len(scores)) if all(s < 0.5 for s in scores[i:]))
    assert settled <= 40, f"still anomalous {settled} values after the shift"


@pytest.mark.parametrize(
    ("model", "draw"),
    [
        ("level", lambda rng: rng.gauss(50.0, 5.0)),
        ("count", lambda rng: float(_poisson(rng, 0.7))),
        ("count", lambda rng: float(_poisson(rng, 20.0))),
    ],
)
def test_scores_are_calibrated_under_pure_noise(model: str, draw: object) -> None:
    """The fraction of noise rows scoring at least s matches the tail probability s stands for.

    Within a factor of two at tail probabilities 0.1, 0.01 and 0.001.
    """
    scores: list[float] = []
    for seed in range(4):  # four series: a sparse count's lumpy averages vary from one to the next
        rng = random.Random(seed)
        det = make_detector("likelihood", model=model, season_s=None)
        for i in range(25_000):
            x = draw(rng)  # type: ignore[operator]
            score = det.score_one(x, t=60.0 * i)
            det.learn_one(x, t=60.0 * i)
            if i >= 1_000:
                scores.append(score)
    for threshold in (0.1, 0.2, 0.3):
        observed = sum(s >= threshold for s in scores) / len(scores)
        expected = score_to_tail(threshold)
        assert expected / 2 <= observed <= expected * 2, (threshold, observed, expected)


def test_a_short_spike_resolves_once_the_values_are_ordinary_again() -> None:
    """The likelihood's average remembers a spike for `short` windows; the alert does not.

    A steady topic (95-105 posts a minute), two minutes at 3,000, then steady again: the
    alert resolves after `resolve_windows` ordinary windows.
    """
    engine = _engine()
    assert not [e for e in _feed(engine, [95 + (i * 7) % 11 for i in range(30)]) if "firing" in e]
    assert _feed(engine, [3_000, 3_000], start_minute=30) == ["firing@30"]
    after = _feed(engine, [95 + (i * 7) % 11 for i in range(32, 40)], start_minute=32)
    assert after == ["resolved@34"], after
