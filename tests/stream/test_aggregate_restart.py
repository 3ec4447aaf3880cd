"""Aggregator restart: SIGKILL or SIGTERM the worker, restart it, windows recovered from the changelog.

Also shows why ``broker_compat='tansu'`` exists: the embedded broker's ListOffsets
under-reports the end of a log whose last record batch holds several records, and the
fetch high-water mark that the compat layer uses does not.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from newswatch.io.kafka import create_topics
from newswatch.settings import KafkaSettings, Settings
from newswatch.stream.aggregate.faust_compat import fetch_highwaters
from tests.support.aggregate import (
    AggregatorProcess,
    WindowReader,
    assert_matches,
    committed_offset,
    expected_finals_present,
    produce,
    reference,
    scenario,
)
from tests.support.settings import aggregate_settings


async def test_listoffsets_underreports_and_fetch_highwater_is_exact(bootstrap: str, unique: str) -> None:
    """The Tansu bug the compat layer works around, and the workaround's building block."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap, partitions=2)
    topic = f"hw-{unique}"
    await create_topics(kafka, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        for i in range(5):  # five single-record batches
            await producer.send_and_wait(topic, b"single %d" % i, partition=0)
        futures = [await producer.send(topic, b"batched %d" % i, partition=0) for i in range(20)]
        for f in futures:  # one multi-record batch (linger)
            await f
    finally:
        await producer.stop()
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        listed = await consumer.end_offsets([tp0, tp1])
    finally:
        await consumer.stop()
    assert listed[tp0] < 25, "ListOffsets is exact here: the compat layer would no longer be needed"
    fixed = await fetch_highwaters({"bootstrap_servers": bootstrap}, listed)
    assert fixed == {tp0: 25, tp1: 0}


async def _restart_scenario(settings: Settings, tmp_path: Path) -> tuple[int, int]:
    """Run half the events, SIGKILL after the commit, restart, run the rest; compare to the reference.

    Returns (windows equal to the reference, windows expected).
    """
    await create_topics(settings.kafka, [settings.topics.scored])
    events = scenario()
    half = len(events) // 2
    first, second = events[:half], events[half:]
    ref = reference(events)
    agg = AggregatorProcess(settings, tmp_path)
    agg.start()
    try:
        await agg.wait_ready()
        await produce(settings, first)
        deadline = time.monotonic() + 60
        while await committed_offset(settings) < len(first):  # state of the first half is in the changelog
            assert time.monotonic() < deadline, "aggregator did not commit the first half"
        assert agg.stop(signal.SIGKILL) == -signal.SIGKILL
        agg.start()
        await agg.wait_ready()
        await produce(settings, second)
        async with WindowReader(settings) as reader:
            await reader.until(expected_finals_present(ref))
            finals = reader.finals()
            equal = 0
            for ident, ref_window in ref.finals().items():
                try:
                    assert_matches(finals[ident], ref_window)
                    equal += 1
                except AssertionError:
                    pass
        assert agg.stop() == 0
        return equal, len(ref.finals())
    finally:
        if agg.proc and agg.proc.poll() is None:
            agg.stop(signal.SIGKILL)


@pytest.mark.fault
@pytest.mark.slow
async def test_restart_recovers_windows_from_changelog(bootstrap: str, unique: str, tmp_path: Path) -> None:
    settings = aggregate_settings(bootstrap, unique, tmp_path, compat="tansu")
    equal, expected = await _restart_scenario(settings, tmp_path)
    assert equal == expected


@pytest.mark.fault
@pytest.mark.slow
async def test_sigterm_during_backlog_then_restart_equals_reference(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """A clean stop while a backlog is being read flushes, commits and exits 0; a restart completes it."""
    settings = aggregate_settings(bootstrap, unique, tmp_path)
    await create_topics(settings.kafka, [settings.topics.scored])
    events = scenario()
    ref = reference(events)
    await produce(settings, events)  # the whole backlog is there before the worker starts
    agg = AggregatorProcess(settings, tmp_path)
    agg.start()
    try:
        await agg.wait_ready()
        deadline = time.monotonic() + 60
        while agg.metric('newswatch_stream_messages_consumed_total{stage="aggregate"}') < 50:
            assert time.monotonic() < deadline, "aggregator consumed nothing"
        assert agg.stop(signal.SIGTERM, timeout_s=40) == 0
        agg.start()
        await agg.wait_ready()
        async with WindowReader(settings) as reader:
            await reader.until(expected_finals_present(ref))
            finals = reader.finals()
            stats = {
                n: agg.metric(f'newswatch_stream_{n}_total{{stage="aggregate"}}')
                for n in ("messages_consumed", "late_events", "duplicates")
            }
            for ident, ref_window in ref.finals().items():
                try:
                    assert_matches(finals[ident], ref_window)
                except AssertionError as exc:
                    raise AssertionError(f"{stats}: {exc}") from None
        assert agg.stop() == 0
    finally:
        if agg.proc and agg.proc.poll() is None:
            agg.stop(signal.SIGKILL)
