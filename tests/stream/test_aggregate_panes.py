"""The aggregator reading pane records (``aggregate.input: panes``) against the real broker.

Pane records are built from the reference scenario by the classify stage's own builder
(:class:`~newswatch.stream.panes.PaneBuilder`), as a classify worker would write them for
batches of one posts-topic partition; the windows must equal the reference computed directly
from the events, however often and with whatever boundaries the records are delivered.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest

from newswatch.io.kafka import create_topics
from newswatch.io.schemas import ScoredPost
from newswatch.settings import Settings
from newswatch.stream.panes import PaneBuilder
from newswatch.stream.windows import pane_size, window_specs
from tests.support.aggregate import (
    AggregatorProcess,
    WindowReader,
    assert_finals_equal,
    expected_finals_present,
    read_dead_letters,
    reference,
    scenario,
    scored,
)
from tests.support.kafka import produce_records
from tests.support.settings import aggregate_settings

Records = list[tuple[bytes | None, bytes, int | None]]


def pane_records(settings: Settings, events: list[ScoredPost | bytes], size: int, start: int = 0) -> Records:
    """The pane records of ``events[start:]`` in batches of ``size``, the event's index its offset
    on partition 0 of the posts topic (a bad record has an offset, and no row)."""
    builder = PaneBuilder(pane_size(window_specs(settings.aggregate)))
    out: Records = []
    for lo in range(start, len(events), size):
        chunk = events[lo : lo + size]
        posts = [(lo + j, e) for j, e in enumerate(chunk) if isinstance(e, ScoredPost)]
        for batch in builder.build("posts", 0, lo, lo + len(chunk) - 1, posts):
            out.append((b"posts/0", batch.to_json(), None))
    return out


def rows(records: Records) -> int:
    return sum(len(orjson.loads(v)["rows"]) for _, v, _ in records)


@pytest.mark.slow
async def test_pane_windows_equal_reference_however_often_delivered(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = aggregate_settings(bootstrap, unique, tmp_path, input="panes")
    await create_topics(settings.kafka, [settings.topics.panes])
    events = scenario()
    ref = reference(events)
    first = pane_records(settings, events, 16)
    twice = [r for r in first for _ in range(2)]  # every record delivered twice
    replay = pane_records(settings, events[:200], 9, start=100)  # a replay with other boundaries
    bad = [(b"x", b"{not json", None), (b"x", b'{"v": 1, "src": "posts"}', None)]
    backlog = twice[:20] + bad + twice[20:] + replay
    agg = AggregatorProcess(settings, tmp_path)
    agg.start()
    try:
        await agg.wait_ready()
        await produce_records(settings.kafka, settings.topics.panes, backlog)
        async with WindowReader(settings) as reader:
            await reader.until(expected_finals_present(ref))
            assert_finals_equal(reader.finals(), ref)
        redelivered = rows(first) + rows(replay)
        metric = agg.metric
        posts = 'newswatch_stream_messages_consumed_total{stage="aggregate"}'  # posts, not records
        assert metric(posts) == rows(first) + redelivered + len(bad)
        assert metric('newswatch_stream_late_events_total{stage="aggregate"}') == ref.late
        assert metric('newswatch_stream_duplicates_total{stage="aggregate"}') == ref.duplicates + redelivered
        for reason in ("invalid_json", "missing_field"):
            assert metric(f'newswatch_stream_dead_lettered_total{{reason="{reason}",stage="aggregate"}}') == 1
        letters = await read_dead_letters(settings, 2)
        assert sorted(d.reason for d in letters) == ["invalid_json", "missing_field"]
        assert {d.raw for d in letters} == {v for _, v, _ in bad}
        assert agg.stop() == 0
    finally:
        if agg.proc and agg.proc.poll() is None:
            agg.stop(signal.SIGKILL)


@pytest.mark.fault
@pytest.mark.slow
async def test_sigkill_in_a_pane_backlog_then_restart_equals_reference(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Killed while it merges a backlog of pane records (after some were merged and before their
    offsets were committed), the restarted aggregator recovers the merged ranges with its state
    and counts every post once."""
    settings = aggregate_settings(bootstrap, unique, tmp_path, input="panes")
    await create_topics(settings.kafka, [settings.topics.panes])
    events = scenario()
    ref = reference(events)
    backlog = pane_records(settings, events, 3)
    await produce_records(settings.kafka, settings.topics.panes, backlog)
    agg = AggregatorProcess(settings, tmp_path)
    agg.start()
    try:
        await agg.wait_ready()
        deadline = time.monotonic() + 60
        read = 'newswatch_stream_messages_consumed_total{stage="aggregate"}'
        while (merged := agg.metric(read)) < 30:
            assert time.monotonic() < deadline, "aggregator merged nothing"
        assert agg.stop(signal.SIGKILL) == -signal.SIGKILL
        agg.start()
        await agg.wait_ready()
        async with WindowReader(settings) as reader:
            await reader.until(expected_finals_present(ref))
            finals = reader.finals()
        print(f"killed after {merged:.0f} of {rows(backlog)} posts")
        assert_finals_equal(finals, ref)
        global_posts = sum(
            s.count for i, s in finals.items() if i[0] == "global" and i[2].startswith("tumbling")
        )
        assert global_posts == sum(
            len(w.scores) for i, w in ref.finals().items() if i[0] == "global" and i[2].startswith("tumbling")
        )
        assert agg.stop() == 0
    finally:
        if agg.proc and agg.proc.poll() is None:
            agg.stop(signal.SIGKILL)


@pytest.mark.slow
async def test_a_pane_row_stamped_in_the_future_is_dead_lettered_alone(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """The classify stage's clock bounds are checked again on every row: a row ahead of the
    aggregator's clock goes to the dead-letter topic by itself, the record's other rows count."""
    settings = aggregate_settings(bootstrap, unique, tmp_path, input="panes")
    await create_topics(settings.kafka, [settings.topics.panes])
    now_ms = int(time.time() * 1000)
    posts = [
        scored("ok1", now_ms - 60_000, -0.5),
        scored("ahead", now_ms + 86_400_000, -0.5),  # a day ahead
        scored("ok2", now_ms - 59_000, 0.5),
    ]
    [batch] = PaneBuilder(pane_size(window_specs(settings.aggregate))).build(
        "posts", 0, 0, 2, list(enumerate(posts))
    )
    agg = AggregatorProcess(settings, tmp_path)
    agg.start()
    try:
        await agg.wait_ready()
        await produce_records(settings.kafka, settings.topics.panes, [(b"posts/0", batch.to_json(), None)])
        [letter] = await read_dead_letters(settings, 1)
        assert letter.reason == "future_timestamp" and "ahead" in letter.detail
        assert orjson.loads(letter.raw)[2] == "ahead"  # the row itself
        async with WindowReader(settings) as reader:
            await reader.until(
                lambda r: any(w.kind == "global" and w.count == 2 for w in r.latest.values()),
                timeout_s=30,
            )
        assert agg.metric('newswatch_stream_messages_consumed_total{stage="aggregate"}') == 3
        assert agg.stop() == 0
    finally:
        if agg.proc and agg.proc.poll() is None:
            agg.stop(signal.SIGKILL)
