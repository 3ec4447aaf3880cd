"""Contract tests of every registered detector (the package's doctests run in tests/test_doctests.py)."""

from __future__ import annotations

import random

import pytest

from newswatch.alerts.detectors import available, make_detector
from newswatch.alerts.detectors.base import score_to_z, z_to_score
from newswatch.alerts.exceptions import UnknownDetectorError


def test_registry_lists_detectors_and_rejects_unknown() -> None:
    assert {"robust_zscore", "cusum", "three_sigma", "fixed_threshold"} <= set(available())
    with pytest.raises(UnknownDetectorError, match="choose one of"):
        make_detector("no_such_detector")


def test_score_mapping_round_trip() -> None:
    for z in (0.5, 2.0, 3.0, 8.0):
        assert score_to_z(z_to_score(z)) == pytest.approx(z)
    assert z_to_score(3.0) == pytest.approx(0.6)


def _series(seed: int) -> tuple[list[float], list[int]]:
    rng = random.Random(seed)
    values, labels = [], []
    for i in range(600):
        anomalous = i > 200 and i % 97 == 0
        values.append(50 + rng.gauss(0, 4) + (40 if anomalous else 0))
        labels.append(int(anomalous))
    return values, labels


@pytest.mark.parametrize("name", available())
def test_contract_scores_in_unit_interval_and_rank_anomalies(name: str) -> None:
    """Scores lie in [0, 1], learning is separate from scoring, and anomalies outrank normal points."""
    det = make_detector(name)
    values, labels = _series(3)
    scores = []
    for i, x in enumerate(values):
        before = det.score_one(x, t=60.0 * i)
        again = det.score_one(x, t=60.0 * i)
        assert before == again, "score_one must not change the detector"
        assert 0.0 <= before <= 1.0
        scores.append(before)
        det.learn_one(x, t=60.0 * i)
    assert det.expected is not None
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores[200:], labels[200:], strict=True) if not y]
    # ROC AUC by pairwise comparison: anomalies must be ranked above normal points.
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    auc = wins / (len(pos) * len(neg))
    assert auc > 0.9, f"{name}: AUC {auc:.2f}"


@pytest.mark.parametrize("name", ["robust_zscore", "three_sigma", "cusum"])
def test_direction_down_sees_drops_only(name: str) -> None:
    up, down = make_detector(name, direction="up"), make_detector(name, direction="down")
    rng = random.Random(0)
    for _ in range(100):
        x = 10 + rng.gauss(0, 1)
        up.learn_one(x)
        down.learn_one(x)
    # One point moves a CUSUM sum by at most its clip (score ~0.5); point detectors go further.
    assert up.score_one(0.0) == 0.0 and down.score_one(0.0) > 0.5
    assert down.score_one(20.0) == 0.0 and up.score_one(20.0) > 0.5


def test_robust_zscore_learns_daily_seasonality() -> None:
    """A daily pattern that repeats is not anomalous once learned; the same value off-season is."""
    seasonal = make_detector("robust_zscore")
    plain = make_detector("robust_zscore", season_s=None)
    rng = random.Random(5)

    def value(minute: int) -> float:
        hour = (minute // 60) % 24
        return (80.0 if 14 <= hour < 16 else 20.0) + rng.gauss(0, 2)

    for m in range(3 * 1440 + 14 * 60 + 5):  # three days, then into the busy hours of day 4
        x = value(m)
        if m == 3 * 1440 + 14 * 60 + 4:
            t = 60.0 * m
            assert seasonal.score_one(x, t) < 0.5 < plain.score_one(x, t)
        seasonal.learn_one(x, 60.0 * m)
        plain.learn_one(x, 60.0 * m)
    off_season = 3 * 1440 + 3 * 60
    assert seasonal.score_one(80.0, 60.0 * off_season) > 0.6


def test_bad_parameters_raise() -> None:
    with pytest.raises(ValueError):
        make_detector("robust_zscore", direction="sideways")
    with pytest.raises(ValueError):
        make_detector("robust_zscore", window=1)


def test_robust_zscore_judges_shares_by_their_support() -> None:
    """A bearish share of 0.45 against a 0.25 baseline: alarming over 300 posts, not over 12."""
    det = make_detector("robust_zscore", season_s=None)
    rng = random.Random(11)
    for _ in range(120):
        n = rng.randint(12, 300)
        det.learn_one(sum(rng.random() < 0.25 for _ in range(n)) / n, n=n)
    assert det.score_one(0.45, n=300) > 0.7 > 0.5 > det.score_one(0.45, n=12)
