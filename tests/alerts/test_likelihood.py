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


HALF_HOUR_S = 1_800.0
MONDAY_S = 4 * 86_400.0  # 1970-01-05, a Monday


@pytest.mark.parametrize(("model", "holiday_floor"), [("level", 0.25), ("count", 0.5)])
def test_weekly_profile_flags_a_holiday_but_not_the_weekend(model: str, holiday_floor: float) -> None:
    """Busy weekdays, quiet weekends, and one Wednesday that looks like a Sunday (a holiday).

    The daily profile alone forecasts each day from the days before, so every weekend is a
    surprise and the holiday is not; the weekly profile knows the weekend and flags the holiday.
    """

    def run(**params: object) -> tuple[float, float]:
        rng = random.Random(0)
        det = make_detector("likelihood", model=model, direction="both", **params)
        weekend_max = holiday_max = 0.0
        for day in range(42):
            holiday = day == 37
            quiet = day % 7 in (5, 6) or holiday
            for slot in range(48):
                t = MONDAY_S + day * 86_400.0 + slot * HALF_HOUR_S
                bump = math.sin(math.pi * slot / 48) ** 2
                if model == "count":
                    x = float(_poisson(rng, 5.0 + (10.0 if quiet else 40.0) * bump))
                else:
                    x = rng.gauss(40.0 + (60.0 if quiet else 200.0) * bump, 5.0)
                score = det.score_one(x, t=t)
                det.learn_one(x, t=t)
                if day >= 21 and day % 7 in (5, 6):
                    weekend_max = max(weekend_max, score)
                if holiday:
                    holiday_max = max(holiday_max, score)
        return weekend_max, holiday_max

    weekend_max, holiday_max = run()
    assert holiday_max >= holiday_floor, holiday_max
    assert weekend_max < 0.2, weekend_max
    daily_weekend, daily_holiday = run(week_slot_s=None)  # what the weekly profile adds
    assert daily_holiday < holiday_floor and daily_weekend > weekend_max


def test_a_day_without_its_usual_peak_is_flagged() -> None:
    """Ten hours at 80 every day, then a day that stays at its night-time 20.

    A profile slot forecasts from earlier days only (the slot being filled is folded in when it
    ends), so the missing peak is a surprise for every value of it, not only for the first few.
    """
    rng = random.Random(0)
    det = make_detector("likelihood", direction="both", week_slot_s=None)
    ordinary = missing = 0.0
    for day in range(14):
        skip = day == 12
        for slot in range(288):
            t = day * 86_400.0 + slot * 300.0
            peak = 96 <= slot < 216 and not skip
            x = rng.gauss(80.0 if peak else 20.0, 2.0)
            score = det.score_one(x, t=t)
            det.learn_one(x, t=t)
            if 4 <= day < 12:
                ordinary = max(ordinary, score)
            if skip:
                missing = max(missing, score)
    assert missing >= 0.45 and missing > ordinary + 0.2, (missing, ordinary)


def test_a_weaker_episode_soon_after_another_is_not_reported_again() -> None:
    """Re-detection suppression: within ``suppress_n`` values of an episode, a new, weaker hot
    run is damped below the fire level; a stronger one, or the same one later, comes through."""

    def after_episode(gap: int, **params: object) -> float:
        det = make_detector("likelihood", model="count", season_s=None, **params)
        for x in [4, 5, 6, 5] * 75 + [40] + [4, 5, 6, 5] * (gap // 4):
            det.learn_one(float(x))
        return det.score_one(22.0)

    fire = make_detector("likelihood").fire_score
    plain = after_episode(20, suppress_score=None)
    assert plain >= fire, "22 posts where 4-6 are usual is hot on its own"
    assert after_episode(20) < fire <= after_episode(200), "damped soon after the episode, not later"
    assert after_episode(20, suppress_n=10) == pytest.approx(plain)
    det = make_detector("likelihood", model="count", season_s=None)
    for x in [4, 5, 6, 5] * 75 + [22] + [4, 5, 6, 5] * 5:
        det.learn_one(float(x))
    assert det.score_one(40.0) == 1.0, "a stronger episode (a new extreme) is always reported"


def test_the_engine_fires_at_the_detectors_own_level_unless_set() -> None:
    """``alerts.fire_score`` unset: each detector's own scale (likelihood 0.35, z-scores 0.6)."""
    assert _engine().fire_level == pytest.approx(0.35)
    assert AlertEngine(AlertSettings(detector="robust_zscore")).fire_level == pytest.approx(0.6)
    assert AlertEngine(AlertSettings(detector="likelihood", fire_score=0.6)).fire_level == 0.6
    with pytest.raises(ValueError, match="hysteresis"):
        AlertEngine(AlertSettings(detector="likelihood", resolve_score=0.5))


def test_a_young_series_pages_only_on_a_burst() -> None:
    """With a few dozen values, neither the likelihood's history nor the seen range is a
    reference yet: a moderate rise stays below the fire level, a burst does not."""
    rng = random.Random(3)
    det = make_detector("likelihood", model="count", season_s=None)
    fire = det.fire_score
    for i in range(30):
        det.learn_one(float(_poisson(rng, 5.0)), t=10.0 * i)
    assert det.score_one(16.0, t=300.0) < fire, "a new record, but 16 where 5 is usual is no burst"
    assert det.score_one(40.0, t=300.0) >= 0.8, "40 where 5 is usual is a burst on its own tail"


def test_a_drop_in_volume_is_no_burst_when_only_rises_are_watched() -> None:
    """Volume watches rises: a window with far fewer posts than usual (an in-progress window's
    first seconds, the last window of a stream that stopped) scores nothing; watching drops, it does."""
    rng = random.Random(4)
    up = make_detector("likelihood", model="count", season_s=None)
    down = make_detector("likelihood", model="count", season_s=None, direction="down")
    for i in range(30):
        x = float(_poisson(rng, 26.0))
        up.learn_one(x, t=10.0 * i)
        down.learn_one(x, t=10.0 * i)
    assert up.score_one(1.0, t=300.0) < 0.1
    assert down.score_one(1.0, t=300.0) >= down.fire_score


def test_in_progress_windows_of_a_steady_young_key_do_not_fire() -> None:
    """10 s windows of ~26 posts, each also seen in progress (1..9 s of its posts) before it is
    final, as the aggregator emits them: none fires (they used to page as drops)."""
    rng = random.Random(2)
    engine = AlertEngine(AlertSettings(detector="likelihood", windows=("tumbling_10000",), warmup_windows=5))
    fired = []
    for i in range(30):
        start = i * 10_000
        times = sorted(rng.uniform(0, 10) for _ in range(_poisson(rng, 26.0)))
        for seconds in range(1, 10):
            so_far = sum(t < seconds for t in times)
            ev = engine.observe_value(
                kind="entity",
                key="$GOOG",
                window="tumbling_10000",
                signal="volume",
                value=float(so_far),
                start_ms=start,
                end_ms=start + 10_000,
                support=so_far,
                final=False,
            )
            fired += [ev] if ev is not None else []
        ev = engine.observe_value(
            kind="entity",
            key="$GOOG",
            window="tumbling_10000",
            signal="volume",
            value=float(len(times)),
            start_ms=start,
            end_ms=start + 10_000,
            support=len(times),
        )
        fired += [ev] if ev is not None else []
    assert fired == []


@pytest.mark.parametrize("seed", range(6))
def test_a_young_series_pages_a_burst_that_starts_mid_window(seed: int) -> None:
    """Seven 10 s windows of ~33 posts, then a burst of +60 a window that starts mid-window: its
    first window holds half of it (~63), the next ones all of it (~93). The half-window is not
    learned as the series' normal or its noise (a young series used to, and then paged nothing)."""
    rng = random.Random(seed)
    engine = AlertEngine(AlertSettings(detector="likelihood", windows=("tumbling_10000",), warmup_windows=5))
    counts = [_poisson(rng, 33.0) for _ in range(7)] + [_poisson(rng, 63.0)]
    counts += [_poisson(rng, 93.0) for _ in range(5)] + [_poisson(rng, 33.0) for _ in range(8)]
    events = []
    for i, count in enumerate(counts):
        ev = engine.observe_value(
            kind="entity",
            key="$NVDA",
            window="tumbling_10000",
            signal="volume",
            value=float(count),
            start_ms=i * 10_000,
            end_ms=(i + 1) * 10_000,
            support=count,
        )
        if ev is not None:
            events.append(f"{ev.status}@{i}")
    assert events and events[0] in ("firing@7", "firing@8", "firing@9"), events
    assert [e.split("@")[0] for e in events] == ["firing", "resolved"], events


def test_a_few_windows_are_no_evidence_of_over_dispersion() -> None:
    """The count noise of a young series starts from Poisson (worth ``noise_prior`` windows): seven
    Poisson windows whose sample spread happens to be wide do not make a doubling ordinary."""
    det = make_detector("likelihood", model="count", season_s=None)
    plain = make_detector("likelihood", model="count", season_s=None, noise_prior=0)
    for i, x in enumerate([31, 43, 30, 42, 25, 25, 45]):
        det.learn_one(float(x), t=10.0 * i)
        plain.learn_one(float(x), t=10.0 * i)
    assert det.score_one(93.0, t=70.0) >= 0.6 > plain.score_one(93.0, t=70.0)


def test_a_level_series_creeping_to_new_extremes_is_one_episode() -> None:
    """A level series' new extreme just past the one that made an episode moments ago is an
    aftershock (damped below the fire level); one that clears it by ``record_margin`` of the
    range, one after ``suppress_n`` values, or one with ``record_margin=0`` is reported at 1."""
    base = [48.0, 50.0, 52.0, 50.0]

    def after_record(gap: int, x: float, **params: object) -> tuple[float, float]:
        det = make_detector("likelihood", season_s=None, **params)
        for v in base * 200:
            det.learn_one(v)
        first = det.score_one(60.0)
        det.learn_one(60.0)
        for v in base * (gap // 4):
            det.learn_one(v)
        return first, det.score_one(x)

    fire = make_detector("likelihood").fire_score
    first, creep = after_record(20, 60.5)
    assert first == 1.0, "the first new high is reported"
    assert creep < fire, "60.5 just after an episode at 60 (4 % of the range past it) is an aftershock"
    assert after_record(20, 62.0)[1] == 1.0, "62 clears 60 by 17 % of the range: a new episode"
    assert after_record(200, 60.5)[1] == 1.0, "after suppress_n values a new high is news again"
    assert after_record(20, 60.5, record_margin=0.0)[1] == 1.0
    assert after_record(20, 60.5, suppress_score=None)[1] == 1.0


def test_a_young_likelihood_history_widens_its_extrapolated_tail() -> None:
    """Past the running 98th percentile the history's tail is an exponential fitted to a few
    exceedances: while the history is young its excess is widened by ``1 + span / n``, so the
    same average reads a larger (less over-confident) tail than the bare fit, and the widening
    fades as the history grows."""
    from newswatch.alerts.detectors.likelihood import _History

    rng = random.Random(5)
    hist = _History(300, 25.0)
    for _ in range(100):
        hist.learn(abs(rng.gauss(0.0, 0.1)))
    assert hist.u is not None and hist.excess is not None
    avg = hist.u + 5 * hist.excess
    bare = hist.q * math.exp(-(avg - hist.u) / hist.excess)
    young = hist.tail(avg, 0.05)
    assert young is not None and young == pytest.approx(hist.q * math.exp(-5 / (1 + 25 / 100)))
    assert young > 2 * bare
    hist.n = 100_000  # the same fit, seen over a long history: (almost) no widening
    old = hist.tail(avg, 0.05)
    assert old is not None and bare <= old < 1.01 * bare
