"""The scored record on the wire: its two clocks, and records written before ``record_ms``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from newswatch.io.schemas import Post, ScoredPost
from newswatch.timeparse import epoch_ms


def _scored() -> ScoredPost:
    post = Post(
        id="p1", text="$AAPL beats", source="wire", published_at=datetime(2026, 1, 2, 9, 30, tzinfo=UTC)
    )
    return ScoredPost(
        post=post,
        topic="Earnings",
        topic_prob=0.9,
        sentiment="bullish",
        sentiment_probs={"bearish": 0.05, "bullish": 0.9, "neutral": 0.05},
        score=0.85,
        model_version="m-int8",
        record_ms=1_767_346_300_000,
        scored_ms=1_767_346_300_250,
        inference_ms=12.5,
    )


def test_round_trip_keeps_event_time_and_record_time_apart() -> None:
    sp = _scored()
    wire = json.loads(sp.to_json())
    assert wire["record_ms"] == sp.record_ms and "published_ms" not in wire
    back = ScoredPost.from_json(sp.to_json())
    assert back == sp
    assert epoch_ms(back.post.published_at) != back.record_ms  # event time is not the record time


def test_records_written_before_the_rename_are_still_read() -> None:
    sp = _scored()
    wire = json.loads(sp.to_json())
    wire["published_ms"] = wire.pop("record_ms")  # the key the classify stage wrote before
    assert ScoredPost.from_json(json.dumps(wire)) == sp
