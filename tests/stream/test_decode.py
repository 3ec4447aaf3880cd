"""Input validation: a table of good and bad messages, plus a fuzz property."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newswatch.stream.decode import (
    REASONS,
    Decoded,
    PostDecoder,
    Rejection,
    clean_text,
    decode_post,
    extract_entities,
)

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


def _msg(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "id": "p1",
        "text": "$AAPL beats estimates",
        "source": "wire",
        "published_at": "2026-01-02T11:59:00Z",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not _DROP}).encode()


_DROP: Any = object()


def _nested(depth: int) -> bytes:
    return b'{"id":"x","text":"t","source":"s","published_at":"2026-01-01T00:00:00Z","n":' + (
        b"[" * depth + b"]" * depth + b"}"
    )


BAD: list[tuple[str, bytes, str]] = [
    ("invalid utf-8", b'{"id":"p","text":"\xff\xfe"}', "invalid_utf8"),
    ("lone surrogate", _msg(text="bad \ud800 text"), "invalid_utf8"),
    ("not json", b"hello world", "invalid_json"),
    ("truncated json", _msg()[:-5], "invalid_json"),
    ("empty bytes", b"", "invalid_json"),
    ("deep nesting", _nested(200_000), "invalid_json"),
    ("array", b"[1, 2, 3]", "not_object"),
    ("string", b'"just a string"', "not_object"),
    ("number", b"42", "not_object"),
    ("missing id", _msg(id=_DROP), "missing_field"),
    ("missing text", _msg(text=_DROP), "missing_field"),
    ("null source", _msg(source=None), "missing_field"),
    ("missing published_at", _msg(published_at=_DROP), "missing_field"),
    ("blank source", _msg(source="   "), "missing_field"),
    ("text is a number", _msg(text=123), "wrong_type"),
    ("text is an object", _msg(text={"a": 1}), "wrong_type"),
    ("source is a list", _msg(source=["x"]), "wrong_type"),
    ("published_at is epoch int", _msg(published_at=1_700_000_000), "wrong_type"),
    ("url is a number", _msg(url=5), "wrong_type"),
    ("entities is a string", _msg(entities="$AAPL"), "wrong_type"),
    ("entities has numbers", _msg(entities=["$AAPL", 3]), "wrong_type"),
    ("id is a bool", _msg(id=True), "bad_id"),
    ("id is empty", _msg(id=""), "bad_id"),
    ("id is a float", _msg(id=1.5), "bad_id"),
    ("id is too long", _msg(id="x" * 300), "bad_id"),
    ("empty text", _msg(text=""), "empty_text"),
    ("whitespace text", _msg(text=" \n\t "), "empty_text"),
    ("only control chars", _msg(text="\x00\x01\u202e\u200b"), "empty_text"),
    ("not a timestamp", _msg(published_at="yesterday"), "bad_timestamp"),
    ("far past", _msg(published_at="1969-07-20T20:17:00Z"), "bad_timestamp"),
    ("far future", _msg(published_at="2030-01-01T00:00:00Z"), "future_timestamp"),
    ("year 1 with offset", _msg(published_at="0001-01-01T00:00:00+05:00"), "bad_timestamp"),
    ("ten megabytes", _msg(text="a" * 10_000_000), "too_large"),
]


@pytest.mark.parametrize(("case", "raw", "reason"), BAD, ids=[c for c, _, _ in BAD])
def test_bad_input_is_rejected_with_its_reason(case: str, raw: bytes, reason: str) -> None:
    result = decode_post(raw, now=NOW)
    assert isinstance(result, Rejection), case
    assert result.reason == reason, (case, result)
    assert result.reason in REASONS
    assert result.detail


def test_minimal_post_extracts_cashtags() -> None:
    result = decode_post(_msg(text="$aapl and $MSFT up, $AAPL again; $100 is not a ticker"), now=NOW)
    assert isinstance(result, Decoded)
    assert result.post.entities == ("$AAPL", "$MSFT")
    assert result.post.published_at == datetime(2026, 1, 2, 11, 59, tzinfo=UTC)
    assert result.post.url is None


def test_full_post_keeps_every_field() -> None:
    raw = _msg(
        id=418157151946035200,
        url="https://example.com/a",
        author="desk",
        lang="en",
        entities=["$TSLA", " ", "$TSLA", "Tesla"],
        published_at="2014-01-01T10:00:00+02:00",
        extra={"ignored": True},
    )
    result = decode_post(raw, now=NOW)
    assert isinstance(result, Decoded)
    post = result.post
    assert post.id == "418157151946035200"
    assert (post.url, post.author, post.lang) == ("https://example.com/a", "desk", "en")
    assert post.entities == ("$TSLA", "Tesla")  # given entities win over extraction
    assert post.published_at == datetime(2014, 1, 1, 8, 0, tzinfo=UTC)


def test_naive_timestamp_is_utc() -> None:
    result = decode_post(_msg(published_at="2026-01-02T10:00:00"), now=NOW)
    assert isinstance(result, Decoded)
    assert result.post.published_at.tzinfo is not None
    assert result.post.published_at.hour == 10


def test_control_and_bidi_chars_are_cleaned_but_original_kept() -> None:
    text = "Sell\u202e $GME\u202c now\x00\x07!\u200b\u2066x\u2069"
    result = decode_post(_msg(text=text), now=NOW)
    assert isinstance(result, Decoded)
    assert result.post.text == text
    assert result.clean_text == "Sell $GME now ! x"
    assert result.post.entities == ("$GME",)


def test_unicode_text_survives() -> None:
    text = "日本株 $7203 は上昇 — Toyota 📈 $TM"
    result = decode_post(_msg(text=text), now=NOW)
    assert isinstance(result, Decoded)
    assert result.clean_text == text
    assert result.post.entities == ("$TM",)


def test_watchlist_names_are_entities() -> None:
    decoder = PostDecoder(watchlist=("Apple", "Meta Platforms"))
    result = decoder.decode(_msg(text="apple and META PLATFORMS rally, pineapple does not"), now=NOW)
    assert isinstance(result, Decoded)
    assert result.post.entities == ("Apple", "Meta Platforms")


def test_limits_are_configurable() -> None:
    decoder = PostDecoder(max_message_bytes=1_024, max_text_chars=10, max_entities=2)
    assert isinstance(decoder.decode(_msg(text="x" * 2_000), now=NOW), Rejection)
    result = decoder.decode(_msg(text="$A $B $C and a long tail"), now=NOW)
    assert isinstance(result, Decoded)
    assert result.clean_text == "$A $B $C a"
    assert result.post.entities == ("$A", "$B")


def test_timestamp_policy_bounds() -> None:
    decoder = PostDecoder(oldest_published_year=2000, max_future_skew_s=60)
    assert isinstance(decoder.decode(_msg(published_at="1999-12-31T23:59:59Z"), now=NOW), Rejection)
    assert isinstance(decoder.decode(_msg(published_at="2000-01-01T00:00:00Z"), now=NOW), Decoded)
    assert isinstance(decoder.decode(_msg(published_at="2026-01-02T12:00:59Z"), now=NOW), Decoded)
    ahead = decoder.decode(_msg(published_at="2026-01-02T12:01:01Z"), now=NOW)
    assert isinstance(ahead, Rejection) and ahead.reason == "future_timestamp"
    assert "61 s ahead" in ahead.detail


def test_the_default_skew_refuses_posts_stamped_a_day_or_minutes_ahead() -> None:
    """Issue 19 F2: posts stamped now + 23 h were accepted (the skew was one day)."""
    decoder = PostDecoder()
    for ahead_s in (23 * 3600, 301):
        stamp = (NOW + timedelta(seconds=ahead_s)).isoformat()
        rejected = decoder.decode(_msg(published_at=stamp), now=NOW)
        assert isinstance(rejected, Rejection) and rejected.reason == "future_timestamp", ahead_s
    assert isinstance(
        decoder.decode(_msg(published_at=(NOW + timedelta(seconds=299)).isoformat()), now=NOW), Decoded
    )


def test_helpers() -> None:
    assert clean_text("a\r\nb\u2028c") == "a b c"
    assert extract_entities("$BRK.B and $brk.b, x$Y, $$Z") == ("$BRK.B",)


@pytest.mark.fuzz
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2_000))
def test_decode_never_raises_on_random_bytes(raw: bytes) -> None:
    result = decode_post(raw, now=NOW)
    assert isinstance(result, Decoded | Rejection)


@pytest.mark.fuzz
@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "text", "source", "published_at", "url", "entities", "lang", "x"]),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40) | st.lists(st.text()),
    )
)
def test_decode_never_raises_on_random_objects(obj: dict[str, Any]) -> None:
    result = decode_post(json.dumps(obj).encode(), now=NOW)
    assert isinstance(result, Decoded | Rejection)
    if isinstance(result, Decoded):
        assert result.clean_text.strip()
        result.post.to_dict()  # serializable


def test_a_post_under_the_message_limit_with_a_huge_url_is_dead_lettered() -> None:
    """Issue 19 F1: a bearish post of 1,048,500 bytes whose url is about 1 MB was scored, and
    its url crash-looped the aggregator's changelog."""
    raw = _msg(text="$NVDA guidance cut, shares plunge", url="https://example.test/" + "a" * 1_048_000)
    assert len(raw) < 1_048_576
    rejected = PostDecoder().decode(raw, now=NOW)
    assert isinstance(rejected, Rejection) and rejected.reason == "field_too_long"
    assert "'url'" in rejected.detail


@pytest.mark.parametrize(
    ("name", "limit"), [("text", 20_000), ("source", 128), ("author", 256), ("lang", 16)]
)
def test_every_field_that_travels_is_bounded(name: str, limit: int) -> None:
    ok = PostDecoder().decode(_msg(**{name: "x" * limit}), now=NOW)
    assert isinstance(ok, Decoded), ok
    rejected = PostDecoder().decode(_msg(**{name: "x" * (limit + 1)}), now=NOW)
    assert isinstance(rejected, Rejection) and rejected.reason == "field_too_long", rejected


# --- the fast path (orjson) accepts exactly what the reference path (json) accepts -------------

#: Inputs where orjson and json differ: big integers, NaN, lone surrogate escapes, a BOM, deep
#: nesting, control characters, duplicate keys.
ODD_VALUES = [
    b"18446744073709551616",
    b"-9223372036854775809",
    b"123456789012345678901234567890",
    b"1e400",
    b"NaN",
    b"-Infinity",
    b'"\\ud800"',
    b'"a\\udfff"',
    b'"\\ud83d\\ude00"',
    b'"\\u0000"',
    b"[" * 300 + b"]" * 300,
    b"[[[[1]]]]",
    b"0.1",
    b"-0",
    b"true",
    b"null",
    b'"\x7f"',
]
_FIELDS = ["id", "text", "source", "published_at", "url", "author", "lang", "entities", "extra"]


@st.composite
def _odd_messages(draw: st.DrawFn) -> bytes:
    parts = {
        "id": b'"p1"',
        "text": b'"$AAPL beats &amp; https://t.co/x \\u202e"',
        "source": b'"wire"',
        "published_at": b'"2026-01-02T11:59:00Z"',
    }
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=3)):
        value = draw(st.sampled_from(ODD_VALUES) | st.builds(lambda v: json.dumps(v).encode(), st.text()))
        if name == "entities" and draw(st.booleans()):
            value = b'["$X", ' + value + b"]"
        parts[name] = value
    body = b"{" + b",".join(b'"' + k.encode() + b'":' + v for k, v in parts.items()) + b"}"
    return draw(st.sampled_from([b"", b" ", b"\xef\xbb\xbf"])) + body


@pytest.mark.fuzz
@settings(max_examples=500, deadline=None)
@given(_odd_messages())
def test_the_fast_path_decides_as_the_reference_path(raw: bytes) -> None:
    decoder = PostDecoder()
    assert decoder.decode(raw, now=NOW) == decoder._decode_exact(raw, now=NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"18446744073709551616", "18446744073709551616"),  # orjson reads it as a float
        (b"-9223372036854775809", "-9223372036854775809"),
        (b"418157151946035200", "418157151946035200"),
    ],
)
def test_integer_ids_beyond_64_bits_are_their_decimal_string(value: bytes, expected: str) -> None:
    raw = b'{"id":' + value + b',"text":"$AAPL up","source":"s","published_at":"2026-01-02T11:59:00Z"}'
    result = decode_post(raw, now=NOW)
    assert isinstance(result, Decoded) and result.post.id == expected


def test_what_only_json_reads_is_still_accepted_or_rejected_as_before() -> None:
    nan = _msg()[:-1] + b',"extra":NaN}'  # json reads NaN, orjson does not
    assert isinstance(decode_post(nan, now=NOW), Decoded)
    rejected = decode_post(_msg(entities=["$A", "\ud800"]), now=NOW)
    assert isinstance(rejected, Rejection) and rejected.reason == "invalid_utf8"
    float_text = _msg()[:-1].replace(b'"text": "$AAPL beats estimates"', b'"text": 1' + b"0" * 25) + b"}"
    rejected = decode_post(float_text, now=NOW)
    assert isinstance(rejected, Rejection) and rejected.detail == "'text' must be a string, got int"
