"""The demo's stream generator: deterministic, realistic mix, scripted incident."""

from __future__ import annotations

from collections import Counter

from newswatch.demo.generator import Incident, StreamGenerator


def test_same_seed_same_stream() -> None:
    a = [p.to_dict() for p in StreamGenerator(seed=5, rate_per_s=20).take(200)]
    b = [p.to_dict() for p in StreamGenerator(seed=5, rate_per_s=20).take(200)]
    for x, y in zip(a, b, strict=True):
        x.pop("published_at"), y.pop("published_at")
    assert a == b


def test_rate_and_event_time_order() -> None:
    gen = StreamGenerator(seed=1, rate_per_s=50, daily_amplitude=0.0)
    offsets = []
    for t, _ in gen.posts():
        offsets.append(t)
        if t > 60:
            break
    assert offsets == sorted(offsets)
    assert 2_400 < len(offsets) < 3_600  # Poisson around 50/s over 60 s


def test_incident_bursts_one_ticker() -> None:
    gen = StreamGenerator(
        seed=2, rate_per_s=20, incident=Incident("$NVDA", start_s=30, duration_s=30, rate_per_s=10)
    )
    before: Counter[str] = Counter()
    during: Counter[str] = Counter()
    for t, post in gen.posts():
        if t > 60:
            break
        bucket = during if t >= 30 else before
        bucket.update(post.entities)
    assert during["$NVDA"] > 4 * max(1, before["$NVDA"])
    assert during.most_common(1)[0][0] == "$NVDA"


def test_daily_cycle_follows_the_start_time_to_the_second() -> None:
    from datetime import UTC, datetime, timedelta

    nine = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    at_nine = StreamGenerator(rate_per_s=40, start=nine)
    half_past = StreamGenerator(rate_per_s=40, start=nine + timedelta(minutes=30))
    assert half_past.rate_at(0) == at_nine.rate_at(30 * 60)  # minutes count, not only the hour
    assert half_past.rate_at(0) < at_nine.rate_at(0)  # past 06:00 the cycle falls towards 18:00
    evening = StreamGenerator(rate_per_s=40, start=datetime(2026, 12, 1, 18, 0, tzinfo=UTC))
    assert abs(evening.rate_at(0) - 40 * 0.7) < 1e-9  # the trough: -30 %
