"""A record faust hands over twice (its seek back to the committed offset) is aggregated once.

The aggregator's own handler, with real faust events and the real broker for its producer:
the second delivery of an offset is counted as a duplicate and acknowledged with the batch,
but neither aggregated, nor counted late, nor dead-lettered again.
"""

from __future__ import annotations

from pathlib import Path

from faust.events import Event
from faust.types.tuples import Message

from newswatch.io.kafka import create_topics
from newswatch.metrics import Metrics
from newswatch.stream.aggregate import Aggregator
from tests.support.aggregate import BASE_MS, scored
from tests.support.settings import aggregate_settings


def _event(agg: Aggregator, topic: str, offset: int, value: bytes) -> Event:
    message = Message(topic, 0, offset, BASE_MS / 1000, 0, [], None, value, None)
    return Event(agg.app, None, value, [], message)


def _count(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"stage": "aggregate"}) or 0.0


async def test_a_redelivered_offset_is_counted_once(bootstrap: str, unique: str, tmp_path: Path) -> None:
    settings = aggregate_settings(bootstrap, unique, tmp_path)
    await create_topics(settings.kafka, [settings.topics.scored, settings.topics.dead_letter])
    metrics = Metrics()
    agg = Aggregator(settings, metrics)
    topic = settings.topics.scored
    records = [
        scored("p0", BASE_MS + 60_000, -0.5).to_json(),  # moves the watermark on
        scored("p1", BASE_MS, -0.9).to_json(),  # a minute behind: late
        b"{not json",  # dead-lettered
    ]
    try:
        for offset, value in enumerate(records):
            await agg.handle(_event(agg, topic, offset, value))
        late_first = _count(metrics, "newswatch_stream_late_events_total")
        dead = metrics.registry.get_sample_value(
            "newswatch_stream_dead_lettered_total", {"stage": "aggregate", "reason": "invalid_json"}
        )
        for offset in (1, 2):  # faust hands the last two over again
            await agg.handle(_event(agg, topic, offset, records[offset]))
        await agg.handle(_event(agg, topic, 3, scored("p3", BASE_MS + 61_000, 0.4).to_json()))
    finally:
        await agg._on_shutdown()
    assert late_first == 1
    assert _count(metrics, "newswatch_stream_late_events_total") == 1, "the late post is late once"
    assert dead == 1
    assert (
        metrics.registry.get_sample_value(
            "newswatch_stream_dead_lettered_total", {"stage": "aggregate", "reason": "invalid_json"}
        )
        == 1
    ), "the bad record is dead-lettered once"
    assert _count(metrics, "newswatch_stream_duplicates_total") == 2
    assert _count(metrics, "newswatch_stream_messages_consumed_total") == 6
    assert [e.message.offset for e in agg._pending] == [0, 1, 2, 1, 2, 3], "every delivery is acked"
