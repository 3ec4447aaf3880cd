"""Issue 19 F2 and F8 on the window engine: a fast feed cannot make other feeds' posts late,
and the same id from two sources is two posts."""

from __future__ import annotations

from newswatch.stream.windows import WindowEngine, WindowSpec
from tests.support.aggregate import BASE_MS, scored

MINUTE = 60_000


def _engine(clock: list[float]) -> WindowEngine:
    return WindowEngine(
        [WindowSpec.tumbling(MINUTE)],
        120_000,
        panes={},
        seen={},
        meta={},
        idle_ms=5_000,
        clock=lambda: clock[0],
    )


def _on_time(engine: WindowEngine, clock: list[float], start: int, n: int, t0: int) -> list[str]:
    """``n`` on-time posts, one a second from alternating sources ``wire`` and ``social``."""
    out = []
    for i in range(n):
        clock[0] += 1.0
        source = ("wire", "social")[i % 2]
        out.append(engine.add(scored(f"ok{start + i}", t0 + (start + i) * 1_000, 0.1, source=source)))
    return out


def test_a_few_posts_stamped_a_day_ahead_do_not_blind_the_other_feeds() -> None:
    clock = [0.0]
    engine = _engine(clock)
    assert set(_on_time(engine, clock, 0, 20, BASE_MS)) == {"added"}
    for i in range(12):  # F2: accepted future stamps (now + 23 h) from one feed
        engine.add(scored(f"future{i}", BASE_MS + 23 * 3_600_000, -0.9, source="fastfeed"))
    outcomes = _on_time(engine, clock, 20, 20, BASE_MS)
    assert outcomes == ["added"] * 20, "on-time posts of the other feeds are not late"
    assert engine.watermark is not None and engine.watermark < BASE_MS + 3_600_000


def test_a_feed_five_minutes_fast_does_not_make_on_time_posts_late() -> None:
    clock = [0.0]
    engine = _engine(clock)
    outcomes = _on_time(engine, clock, 0, 10, BASE_MS)  # the established feeds
    for i in range(10, 70):  # then a feed whose clock is 5 minutes fast joins
        engine.add(scored(f"fast{i}", BASE_MS + 300_000 + i * 1_000, 0.2, source="fast"))
        outcomes += _on_time(engine, clock, i, 1, BASE_MS)
    assert outcomes == ["added"] * 70


def test_the_watermark_follows_the_remaining_feed_once_the_others_fall_idle() -> None:
    clock = [0.0]
    engine = _engine(clock)
    _on_time(engine, clock, 0, 10, BASE_MS)
    engine.add(scored("ahead", BASE_MS + 10 * MINUTE, 0.0, source="fast"))
    assert engine.watermark is not None and engine.watermark < BASE_MS + MINUTE
    clock[0] += 6.0  # wire and social silent for more than idle_ms
    engine.add(scored("ahead2", BASE_MS + 10 * MINUTE + 1, 0.0, source="fast"))
    assert engine.watermark == BASE_MS + 10 * MINUTE + 1


def test_the_same_id_from_two_sources_is_two_posts() -> None:
    """F8: ids 1-5 from two sources (10 distinct posts) were counted as 5 duplicates."""
    clock = [0.0]
    engine = _engine(clock)
    outcomes = [
        engine.add(scored(str(i), BASE_MS + i * 1_000, 0.0, source=source))
        for source in ("wire", "social")
        for i in range(1, 6)
    ]
    assert outcomes == ["added"] * 10
    again = engine.add(scored("3", BASE_MS + 3_000, 0.0, source="social"))
    assert again == "duplicate"  # the same post (source and id) re-delivered
