"""The one ISO-8601 timestamp parser: posts, scored records, replay files and offline series use it.

Rules: :meth:`datetime.fromisoformat` (Python 3.11: ``Z``, offsets, fractions, a date
alone); surrounding whitespace is ignored; a naive timestamp is UTC; the result is an
aware UTC datetime. Epoch numbers are not ISO-8601 and are left to the callers that
accept them.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["epoch_ms", "parse_iso", "parse_iso_or_none"]


def parse_iso(value: str) -> datetime:
    """``value`` as an aware UTC datetime; raises ``ValueError`` when it is not ISO-8601.

    >>> parse_iso(" 2024-01-01T01:00:00+01:00 ").isoformat()
    '2024-01-01T00:00:00+00:00'
    >>> parse_iso("2024-01-01T00:00:00Z") == parse_iso("2024-01-01 00:00:00")  # naive is UTC
    True
    """
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError) as exc:  # e.g. 0001-01-01T00:00:00+01:00
        raise ValueError(f"timestamp {value!r} is out of range: {exc}") from None


def parse_iso_or_none(value: object) -> datetime | None:
    """:func:`parse_iso`, or ``None`` for anything that is not an ISO-8601 string.

    >>> parse_iso_or_none("yesterday") is None, parse_iso_or_none(1704067200) is None
    (True, True)
    """
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


def epoch_ms(when: datetime) -> int:
    """Milliseconds since the epoch of ``when`` (naive means UTC).

    >>> epoch_ms(parse_iso("2024-01-01T00:01:00Z"))
    1704067260000
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
