"""Pre-aggregated panes: merging a batch's panes equals adding its posts one at a time.

The reference is the per-post path (:meth:`WindowEngine.add`), which the aggregator tests pin
against a direct computation from the events; here the pane path must produce exactly the
same windows, outcomes and watermark, and merge every offset once.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from newswatch.io.schemas import Post, RecordError, ScoredPost, WindowStat
from newswatch.stream.panes import CHUNK_BYTES, PaneBatch, PaneBuilder
from newswatch.stream.windows import WindowEngine, WindowSpec

SPECS = [WindowSpec.tumbling(10_000), WindowSpec.hopping(30_000, 5_000)]
GRACE_MS = 2_000
BASE = 1_700_000_000_000


def _post(i: int, ts: int, score: float, source: str, entities: tuple[str, ...], post_id: str) -> ScoredPost:
    post = Post(
        id=post_id,
        text=f"post {i} " * (1 + i % 7),
        source=source,
        published_at=datetime.fromtimestamp(ts / 1000, UTC),
        url=f"https://example.test/{i}",
        entities=entities,
    )
    sentiment = "bearish" if score < -0.2 else "neutral"
    return ScoredPost(post, ["earnings", "macro"][i % 2], 0.9, sentiment, {}, score, "v", 0, 0, 0.0)  # type: ignore[arg-type]


def stream(seed: int, n: int = 400) -> list[ScoredPost]:
    """Posts out of order by up to 3 s on two sources, with re-sent posts and late ones."""
    rnd = random.Random(seed)
    out: list[ScoredPost] = []
    for i in range(n):
        ts = BASE + i * 150 + rnd.randint(-3_000, 3_000)
        if rnd.random() < 0.04:
            ts -= 20_000  # late: far behind the watermark
        score = round(rnd.uniform(-1, 1), 2)
        entities = tuple(rnd.sample(["$A", "$B", "$C", "$D"], rnd.randint(0, 2)))
        source = rnd.choice(["wire", "social"])
        out.append(_post(i, ts, score, source, entities, f"p{i}"))
        if rnd.random() < 0.05 and out:
            out.append(out[rnd.randrange(len(out))])  # the same post again
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def engine() -> tuple[WindowEngine, dict[str, Any]]:
    meta: dict[str, Any] = {}
    return WindowEngine(SPECS, GRACE_MS, panes={}, seen={}, meta=meta, clock=Clock()), meta


def windows(eng: WindowEngine) -> list[WindowStat]:
    stats = eng.collect()
    eng.commit()
    return stats


def by_post(
    posts: list[ScoredPost], emit_after: set[int] | None = None
) -> tuple[WindowEngine, list[WindowStat], dict[str, int]]:
    """Posts one at a time; windows are emitted (and old panes pruned) after the posts of
    ``emit_after`` (every 50 by default), where the batch path emits."""
    eng, _ = engine()
    counts = {"added": 0, "duplicate": 0, "late": 0}
    out: list[WindowStat] = []
    for i, sp in enumerate(posts):
        counts[eng.add(sp)] += 1
        if (i in emit_after) if emit_after is not None else (i % 50 == 49):
            out += windows(eng)
    out += windows(eng)
    return eng, out, counts


def batches(posts: list[ScoredPost], size: int, first_offset: int = 0) -> list[PaneBatch]:
    builder = PaneBuilder(WindowEngine(SPECS, GRACE_MS, panes={}, seen={}, meta={}).pane_ms)
    out = []
    for lo in range(0, len(posts), size):
        chunk = [(first_offset + lo + j, sp) for j, sp in enumerate(posts[lo : lo + size])]
        out += builder.build("posts", 0, chunk[0][0], chunk[-1][0], chunk)
    return out


def emit_points(groups: list[PaneBatch]) -> set[int]:
    """The posts after which :func:`by_batch` emits (the last of a batch, every 50 or more)."""
    points, merged, total = set(), 0, 0
    for b in groups:
        merged += len(b.rows)
        total += len(b.rows)
        if merged >= 50:
            points.add(total - 1)
            merged = 0
    return points


def by_batch(
    groups: list[PaneBatch], emit: bool = True
) -> tuple[WindowEngine, list[WindowStat], dict[str, int]]:
    """Batches one at a time; windows are emitted after every 50 or more posts (``emit``),
    else only at the end."""
    eng, _ = engine()
    counts = {"added": 0, "duplicate": 0, "late": 0}
    out: list[WindowStat] = []
    merged = 0
    for b in groups:
        outcome = eng.add_batch(PaneBatch.from_json(b.to_json()))  # through the wire form
        counts["added"] += outcome.added
        counts["duplicate"] += outcome.duplicate
        counts["late"] += outcome.late
        merged += len(b.rows)
        if merged >= 50 and emit:
            out += windows(eng)
            merged = 0
    out += windows(eng)
    return eng, out, counts


def finals(stats: list[WindowStat]) -> dict[tuple[str, str, str, int], WindowStat]:
    return {(s.kind, s.key, s.window, s.start_ms): s for s in stats if s.final}


def assert_same(a: list[WindowStat], b: list[WindowStat]) -> None:
    fa, fb = finals(a), finals(b)
    assert fa.keys() == fb.keys()
    for ident, s in fa.items():
        t = fb[ident]
        assert (s.count, s.negative_share, s.late, s.examples) == (
            t.count,
            t.negative_share,
            t.late,
            t.examples,
        )
        assert s.mean_score == pytest.approx(t.mean_score, abs=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_merging_panes_equals_adding_posts(seed: int, size: int) -> None:
    posts = stream(seed)
    groups = batches(posts, size)
    ref_eng, ref, ref_counts = by_post(posts, emit_points(groups))
    eng, got, counts = by_batch(groups)
    assert ref_counts["duplicate"] > 0 and ref_counts["late"] > 0  # the stream exercises both
    assert counts == ref_counts
    assert eng.watermark == ref_eng.watermark
    assert len(finals(ref)) > 20
    assert_same(got, ref)


def test_the_same_offset_range_merged_twice_counts_once() -> None:
    posts = stream(4)
    groups = batches(posts, 50)
    _ref_eng, ref, ref_counts = by_post(posts, emit_points(groups))
    _eng, got, counts = by_batch([g for b in groups for g in (b, b)])  # every record delivered twice
    assert counts["added"] == ref_counts["added"]
    assert counts["duplicate"] == ref_counts["duplicate"] + sum(len(b.rows) for b in groups)
    assert_same(got, ref)


def test_a_replay_with_other_boundaries_counts_each_offset_once() -> None:
    """A classify worker restarted before its commit re-reads from the last committed offset and
    cuts other batches: the replay overlaps ranges merged before."""
    posts = stream(5)
    first = batches(posts[:230], 40)  # written before the crash (offsets 0..229)
    replay = batches(posts[200:], 33, first_offset=200)  # committed up to 199: re-read from 200
    _eng, got, counts = by_batch(first + replay, emit=False)  # emits (and prunes) at the end only
    _ref_eng, ref, ref_counts = by_post(posts, emit_after=set())
    assert counts["added"] == ref_counts["added"]
    assert counts["duplicate"] == ref_counts["duplicate"] + 30
    assert_same(got, ref)


def test_merged_ranges_survive_a_restart_of_the_engine() -> None:
    """The ranges live in ``meta`` (a changelogged table in the aggregator): an engine rebuilt
    from the state skips what its predecessor merged."""
    posts = stream(6, n=120)
    groups = batches(posts, 30)
    panes: dict[str, Any] = {}
    seen: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    first = WindowEngine(SPECS, GRACE_MS, panes=panes, seen=seen, meta=meta, clock=Clock())
    for b in groups[:2]:
        first.add_batch(b)
    first.checkpoint()
    before = dict(panes)
    second = WindowEngine(SPECS, GRACE_MS, panes=panes, seen=seen, meta=meta, clock=Clock())
    replayed = second.add_batch(groups[1])
    assert replayed.added == 0 and replayed.duplicate == len(groups[1].rows)
    assert panes == before
    assert second.add_batch(groups[2]).added > 0


def test_a_big_batch_is_cut_into_contiguous_records_under_the_limit() -> None:
    posts = [_post(i, BASE + i, -0.5, "wire", ("$A",), f"id{i}") for i in range(3_000)]
    posts = [
        replace(sp, post=replace(sp.post, text="x" * 5_000, url="https://e.test/" + "u" * 1_500))
        for sp in posts
    ]
    out = PaneBuilder(10_000).build("posts", 3, 100, 3_200, [(100 + i, sp) for i, sp in enumerate(posts)])
    assert len(out) > 1
    assert out[0].lo == 100 and out[-1].hi == 3_200
    assert all(a.hi + 1 == b.lo for a, b in itertools.pairwise(out))
    assert all(len(b.to_json()) < 2 * CHUNK_BYTES for b in out)
    assert sum(len(b.rows) for b in out) == 3_000


def _wire(**change: Any) -> bytes:
    posts = stream(7, n=10)
    d = orjson.loads(batches(posts, 10)[0].to_json())
    d.update(change)
    return orjson.dumps(d)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_object"),
        (orjson.dumps({"v": 1}), "missing_field"),
        (_wire(v=2), "invalid_value"),
        (_wire(lo=5, hi=1), "invalid_value"),
        (_wire(rows=[[0, "wire", "x", 1, 2.5, 0, "t", [], "", None]], panes=[]), "invalid_value"),
        (_wire(rows=[[0, "wire", "x", 1, 0.5, 0, "t", [7], "", None]]), "wrong_type"),
        (_wire(panes=[]), "invalid_value"),  # the rows are not all counted
        (_wire(panes=[["global", 0, "all", 99, 0.0, 0, []]]), "invalid_value"),
    ],
)
def test_a_bad_pane_record_names_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(RecordError) as err:
        PaneBatch.from_json(raw)
    assert err.value.reason == reason
