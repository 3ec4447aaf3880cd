"""AlertEvent.from_json is strict like WindowStat.from_json (issue 19 F3): every record of the alerts
topic is untrusted; anything but an alert event is a RecordError naming the reason, never an
AttributeError, a TypeError or an event that crashes the notifier later."""

from __future__ import annotations

import json
from typing import Any

import pytest

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.incidents import Incident, IncidentBook
from newswatch.io.schemas import LIMITS, RecordError
from tests.support.alerts import make_alert, nvda_incident

GOOD = json.loads(make_alert().to_json())


def _with(**changes: Any) -> bytes:
    d = dict(GOOD)
    for name, value in changes.items():
        if value is _DROP:
            d.pop(name)
        else:
            d[name] = value
    return json.dumps(d).encode()


_DROP = object()

#: (record, reason): what the notifier dead-letters as invalid_alert, with the reason in the detail.
POISON = {
    "null": (b"null", "not_object"),
    "a list": (b"[]", "not_object"),
    "a string": (b'"alert"', "not_object"),
    "observed abc": (_with(observed="abc"), "wrong_type"),
    "examples xyz": (_with(examples="xyz"), "wrong_type"),
    "examples of strings": (_with(examples=["a", "b"]), "wrong_type"),
    "observed NaN": (_with(observed=float("nan")), "wrong_type"),
    "score Infinity": (_with(score=float("inf")), "wrong_type"),
    "baseline a string": (_with(baseline="14"), "wrong_type"),
    "observed 10**400": (_with(observed=10**400), "invalid_value"),
    "support negative": (_with(support=-1), "invalid_value"),
    "support true": (_with(support=True), "wrong_type"),
    "status unknown": (_with(status="maybe"), "invalid_value"),
    "severity unknown": (_with(severity="apocalyptic"), "invalid_value"),
    "kind unknown": (_with(kind="planet"), "invalid_value"),
    "signal unknown": (_with(signal="vibes"), "invalid_value"),
    "key missing": (_with(key=_DROP), "missing_field"),
    "key a number": (_with(key=42), "wrong_type"),
    "key 1 MB": (_with(key="k" * 1_000_000), "field_too_long"),
    "11 examples": (_with(examples=[{"id": "p"}] * (LIMITS.examples + 1)), "field_too_long"),
    "an example text of 5,000": (_with(examples=[{"id": "p", "text": "x" * 5_000}]), "wrong_type"),
    "dashboard_url 10 kB": (_with(dashboard_url="h" * 10_000), "field_too_long"),
    "start_ms in year 300,000": (_with(start_ms=10**16, end_ms=10**16 + 60_000), "invalid_value"),
    "end before start": (_with(end_ms=GOOD["start_ms"]), "invalid_value"),
    "a lone surrogate": (json.dumps({**GOOD, "key": "\ud800"}).encode(), "invalid_utf8"),
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
}


@pytest.mark.parametrize("raw, reason", list(POISON.values()), ids=list(POISON))
def test_a_poison_alert_is_a_record_error_naming_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        AlertEvent.from_json(raw)
    assert caught.value.reason == reason


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe\x00", b'{"status": "firing"'])
def test_what_is_not_json_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        AlertEvent.from_json(raw)


def test_a_valid_event_round_trips_exactly() -> None:
    for event in [make_alert(), *nvda_incident(), make_alert(observed=50, baseline=None)]:  # type: ignore[arg-type]
        raw = event.to_json()
        again = AlertEvent.from_json(raw)
        assert again == event and again.to_json() == raw, "numbers keep their JSON type (50 stays 50)"


def test_unknown_fields_and_emoji_are_accepted() -> None:
    raw = json.dumps({**GOOD, "added_later": {"x": 1}, "key": "$NVDA 🚀"}).encode()
    assert AlertEvent.from_json(raw).key == "$NVDA 🚀"
    assert AlertEvent.from_json(json.dumps({**GOOD, "key": "\U0001f680"}, ensure_ascii=True)).key == "🚀"


@pytest.mark.parametrize(
    "raw",
    [
        b"null",
        b'{"id": "inc_1"}',
        b'{"id": "inc_1", "dedup_key": "d", "start_ms": 0, "end_ms": 1, "members": "xyz", "posts": []}',
        b'{"id": "inc_1", "dedup_key": "d", "start_ms": 0, "end_ms": 1, "members": [{"firing": null}]}',
        b'{"id": "inc_1", "dedup_key": "d", "start_ms": "0", "end_ms": 1, "members": []}',
        b'{"id": "inc_1", "dedup_key": "d", "start_ms": 0, "end_ms": 1, "members": [], "posts": [1]}',
        b"[" * 50_000,
    ],
)
def test_an_incident_log_record_that_is_not_an_incident_is_a_record_error(raw: bytes) -> None:
    with pytest.raises(RecordError):
        Incident.from_record(raw)


def test_the_incident_book_skips_and_returns_what_is_not_an_incident() -> None:
    book = IncidentBook(gap_ms=600_000)
    [incident] = book.observe(nvda_incident()).changed
    records = [
        (b"bad", b"null"),
        (incident.id.encode(), incident.to_record()),
        (b"tomb", b"x"),
        (b"tomb", None),
    ]
    restarted = IncidentBook(gap_ms=600_000)
    skipped = restarted.load(records)
    assert [(k, v) for k, v, _ in skipped] == [(b"bad", b"null")]
    assert list(restarted.incidents) == [incident.id]
