"""The aggregator against the real embedded broker: windows equal a reference computed in Python.

The aggregator runs as it does in production: ``python -m newswatch.cli.aggregate``
in a subprocess (a faust worker), configured by a YAML file. Tests produce ScoredPost JSON
themselves and read the windows topic with a plain consumer.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from newswatch.io.kafka import create_topics
from tests.support.aggregate import (
    AggregatorProcess,
    WindowReader,
    assert_finals_equal,
    assert_matches,
    expected_finals_present,
    produce,
    read_dead_letters,
    reference,
    scenario,
    scored,
)
from tests.support.settings import aggregate_settings

# --------------------------------------------------------------------------------------------- tests


@pytest.mark.slow
async def test_windows_equal_reference(bootstrap: str, unique: str, tmp_path: Path) -> None:
    settings = aggregate_settings(bootstrap, unique, tmp_path)
    await create_topics(settings.kafka, [settings.topics.scored])
    events = scenario()
    ref = reference(events)
    assert ref.late == 2 and ref.duplicates == 11
    agg = AggregatorProcess(settings, tmp_path)
    agg.start()
    try:
        await agg.wait_ready()
        started = time.monotonic()
        await produce(settings, events)
        async with WindowReader(settings) as reader:
            await reader.until(expected_finals_present(ref))
            elapsed = time.monotonic() - started
            assert_finals_equal(reader.finals(), ref)
            assert agg.metric('newswatch_stream_late_events_total{stage="aggregate"}') == ref.late
            assert agg.metric('newswatch_stream_duplicates_total{stage="aggregate"}') == ref.duplicates
            # The exported watermark: at least the one that closed the reference's finals, at
            # most the newest event time (feeds that fall idle let it reach that).
            newest = max(
                int(e.post.published_at.timestamp() * 1000) for e in events if not isinstance(e, bytes)
            )
            watermark_s = agg.metric('newswatch_stream_watermark_seconds{stage="aggregate"}')
            assert ref.watermark / 1000 <= watermark_s <= newest / 1000
            assert (
                agg.metric('newswatch_stream_dead_lettered_total{reason="invalid_json",stage="aggregate"}')
                == 1
            )
            assert (
                agg.metric('newswatch_stream_dead_lettered_total{reason="missing_field",stage="aggregate"}')
                == 1
            )
            # entity gauges exported for the newest windows
            assert agg.metric("newswatch_stream_window_posts") > 0
            # an update of a fresh event is visible quickly (target ~1 s; generous on a busy 2-core box)
            probe_at = time.monotonic()
            await produce(settings, [scored("probe", ref.watermark + 1_000, -0.9, entities=("$PROBE",))])
            await reader.until(
                lambda r: any(i[1] == "$PROBE" and i[2] == "hopping_30000_10000" for i in r.latest), 30
            )
            visible_s = time.monotonic() - probe_at
            assert visible_s < 5.0
        letters = await read_dead_letters(settings, 2)
        assert sorted(d.reason for d in letters) == ["invalid_json", "missing_field"]
        assert {d.raw for d in letters} == {b"{not json", b'{"id": "x"}'}
        print(f"{len(events)} events: finals after {elapsed:.1f} s; update visible in {visible_s:.2f} s")
        assert agg.stop() == 0
    finally:
        if agg.proc and agg.proc.poll() is None:
            agg.stop(signal.SIGKILL)


@pytest.mark.slow
async def test_backlog_over_partitions_equals_reference(bootstrap: str, unique: str, tmp_path: Path) -> None:
    """A backlog in 3 partitions, read unevenly, makes no event late: the watermark waits for the slowest."""
    settings = aggregate_settings(bootstrap, unique, tmp_path, partitions=3)
    await create_topics(settings.kafka, [settings.topics.scored])
    events = [e for e in scenario() if isinstance(e, bytes) or not e.post.id.startswith("late")]
    ref = reference(events)
    assert ref.late == 0
    await produce(settings, events)  # before the aggregator starts: it finds a backlog
    agg = AggregatorProcess(settings, tmp_path)
    agg.start()
    try:
        await agg.wait_ready()
        async with WindowReader(settings) as reader:
            await reader.until(expected_finals_present(ref))
            finals = reader.finals()
            for ident, ref_window in ref.finals().items():
                assert_matches(finals[ident], ref_window)
        assert agg.metric('newswatch_stream_late_events_total{stage="aggregate"}') == 0
        assert agg.metric('newswatch_stream_duplicates_total{stage="aggregate"}') == ref.duplicates
        assert agg.stop() == 0
    finally:
        if agg.proc and agg.proc.poll() is None:
            agg.stop(signal.SIGKILL)
