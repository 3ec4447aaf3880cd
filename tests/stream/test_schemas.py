"""The scored record on the wire: its two clocks, and records written before ``record_ms``."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newswatch.io.schemas import (
    LIMITS,
    MAX_RECORD_BYTES,
    Post,
    RecordError,
    ScoredPost,
    WindowStat,
    check_encodable,
    load_json,
    post_limit_violation,
)
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


# --- every stage refuses records outside the schema (issue 19 F1, F3) ---------------------------


def _refused(raw: str | bytes, parse: Any) -> RecordError:
    with pytest.raises(RecordError) as info:
        parse(raw)
    return info.value


def test_a_scored_record_with_a_huge_url_is_refused_not_carried_into_state() -> None:
    """F1: a valid post with a ~1 MB url was scored, kept whole in the aggregator's state,
    and its changelog write failed on every restart."""
    wire = json.loads(_scored().to_json())
    wire["url"] = "https://example.test/" + "a" * 1_000_000
    refused = _refused(json.dumps(wire), ScoredPost.from_json)
    assert refused.reason == "field_too_long" and "'url'" in str(refused)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sentiment": "furious"}, "wrong_type"),
        ({"score": "abc"}, "wrong_type"),
        ({"score": True}, "wrong_type"),
        ({"entities": "xyz"}, "wrong_type"),
        ({"published_at": "yesterday"}, "bad_timestamp"),
        ({"text": None}, "missing_field"),
        ({"published_at": None}, "missing_field"),
        ({"source": "s" * 129}, "field_too_long"),
    ],
)
def test_scored_records_of_the_wrong_shape_are_refused_with_a_reason(
    change: dict[str, Any], reason: str
) -> None:
    wire = {**json.loads(_scored().to_json()), **change}
    assert _refused(json.dumps(wire), ScoredPost.from_json).reason == reason


def _window() -> dict[str, Any]:
    return {
        "kind": "entity",
        "key": "$AAPL",
        "window": "tumbling_60000",
        "start_ms": 0,
        "end_ms": 60_000,
        "count": 3,
        "mean_score": -0.5,
        "negative_share": 0.66,
        "examples": [{"id": "p1", "text": "t", "url": None, "score": -0.9, "entities": ["$AAPL"]}],
        "final": True,
    }


def test_window_records_round_trip_and_wrong_shapes_are_refused() -> None:
    assert WindowStat.from_json(json.dumps(_window())).count == 3
    for change, reason in (
        ({"count": "abc"}, "wrong_type"),
        ({"mean_score": float("nan")}, "wrong_type"),
        ({"kind": "planet"}, "wrong_type"),
        ({"examples": "xyz"}, "wrong_type"),
        ({"examples": [{"text": "x" * 5_000}]}, "wrong_type"),
        ({"key": "k" * 300}, "field_too_long"),
        ({"end_ms": 0}, "invalid_value"),
    ):
        assert _refused(json.dumps({**_window(), **change}), WindowStat.from_json).reason == reason, change
    assert _refused("null", WindowStat.from_json).reason == "not_object"


def test_the_largest_records_the_limits_allow_fit_the_broker_limit() -> None:
    lim = LIMITS
    post = Post(
        id="i" * lim.id,
        text="\u2028" * lim.text,  # escapes to 6 bytes a character on the wire
        source="s" * lim.source,
        published_at=datetime(2026, 1, 2, tzinfo=UTC),
        url="u" * lim.url,
        author="a" * lim.author,
        lang="l" * lim.lang,
        entities=tuple("e" * lim.entity for _ in range(lim.entities)),
    )
    scored = ScoredPost(post, "t" * 64, 0.9, "bearish", {"bearish": 1.0}, -1.0, "m", 0, 0, 0.0)
    assert post_limit_violation(post) is None
    assert len(scored.to_json()) < MAX_RECORD_BYTES
    assert ScoredPost.from_json(scored.to_json()) == scored


# --- the fast serialisation (orjson) and read (orjson, then json where they differ) -------------


def test_scored_records_read_back_the_same_through_either_parser() -> None:
    sp = _scored()
    raw = sp.to_json()
    assert json.loads(raw) == json.loads(json.dumps(json.loads(raw)))  # plain JSON
    assert ScoredPost.from_json(raw) == ScoredPost._from_dict(json.loads(raw)) == sp
    assert ScoredPost.from_json(raw.decode()) == sp


def test_what_orjson_does_not_write_or_read_is_left_to_json() -> None:
    nan = dataclasses.replace(_scored(), score=float("nan"))
    assert b'"score":NaN' in nan.to_json()  # as json wrote it: from_json refuses it as before
    assert _refused(nan.to_json(), ScoredPost.from_json).reason == "wrong_type"
    surrogate = dataclasses.replace(_scored(), topic="\ud800")
    with pytest.raises(UnicodeEncodeError):
        surrogate.to_json()
    wire = json.loads(_scored().to_json())
    wire["scored_ms"] = 2**70  # orjson would read a float
    assert ScoredPost.from_json(json.dumps(wire)).scored_ms == 2**70
    escaped = json.dumps({**wire, "text": "a \ud800 b"})  # a lone surrogate escape
    assert _refused(escaped, ScoredPost.from_json).reason == "invalid_utf8"
    deep = json.dumps({**wire, "extra": [[[[[]]]]] * 300})  # many brackets: json reads it
    assert ScoredPost.from_json(deep).post.id == "p1"


@pytest.mark.parametrize("tiny", [1e-05, -2.5e-07, 9.99e-05, 1e-10, 0.0, -0.0, 1e16, 0.30000000000000004])
def test_window_records_are_byte_for_byte_what_json_writes(tiny: float) -> None:
    stat = WindowStat.from_json(json.dumps({**_window(), "mean_score": tiny}))
    stat = dataclasses.replace(stat, examples=({"id": "e", "score": tiny, "text": "ü \u2028"},))
    deep = {**dataclasses.asdict(stat), "examples": list(stat.examples)}
    assert stat.to_json() == json.dumps(deep, ensure_ascii=False, separators=(",", ":")).encode()
    assert WindowStat.from_json(stat.to_json()) == stat


_ODD = st.sampled_from(
    [None, True, 0, -1, 2**63, 2**70, 1.5, float("nan"), float("inf"), "", "x" * 300, "bullish", [], ["$A"],
     [1], {}, {"bearish": True}, {"bearish": 0.5}, "2026-01-02T09:30:00Z", "yesterday", "\ud800"]
)  # fmt: skip
_NAMES = st.sampled_from([*json.loads(_scored().to_json()), "published_ms", "extra"])


def _outcome(parse: Any, raw: str) -> Any:
    try:
        return parse(raw)
    except RecordError as exc:
        return ("RecordError", exc.reason, str(exc))
    except ValueError as exc:
        return (type(exc).__name__, str(exc))


def _reference(raw: str) -> ScoredPost:
    scored = ScoredPost._from_dict(load_json(raw))
    check_encodable(raw, scored)
    return scored


@pytest.mark.fuzz
@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_NAMES, _ODD, max_size=4))
def test_the_fast_read_decides_as_the_json_read(change: dict[str, Any]) -> None:
    raw = json.dumps({**json.loads(_scored().to_json()), **change})
    assert _outcome(ScoredPost.from_json, raw) == _outcome(_reference, raw)
    assert _outcome(ScoredPost.from_json, raw.encode("utf-8", "surrogatepass")) == _outcome(_reference, raw)


@pytest.mark.parametrize("odd", [float("nan"), float("inf"), 1e308, 3e-6])
def test_window_examples_with_odd_numbers_are_written_as_json_writes_them(odd: float) -> None:
    stat = WindowStat.from_json(json.dumps(_window()))
    examples = ({"id": "a", "score": odd}, {"id": "b", "score": 1e308})
    stat = dataclasses.replace(stat, examples=examples)
    deep = {**dataclasses.asdict(stat), "examples": list(stat.examples)}
    assert stat.to_json() == json.dumps(deep, ensure_ascii=False, separators=(",", ":")).encode()
