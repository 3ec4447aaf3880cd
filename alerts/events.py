"""The alert event: one firing or resolved transition of one (key, signal, rule)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from newswatch.io.schemas import LIMITS, RecordError, _field, _small_example, check_encodable, load_json

__all__ = ["KINDS", "SEVERITIES", "SIGNALS", "STATUSES", "AlertEvent", "Status", "fingerprint_of"]

Status = Literal["firing", "resolved"]

#: The closed sets :meth:`AlertEvent.from_json` accepts.
STATUSES = ("firing", "resolved")
SEVERITIES = ("warning", "critical")
KINDS = ("topic", "entity", "source", "global")
SIGNALS = ("volume", "negative_share", "mean_sentiment", "series")
#: Bounds of the short strings of an alert (a fingerprint is 16 hex digits, rule and window names
#: are configuration).
_NAME_CHARS = 64
#: Window times are milliseconds between 1970 and the end of year 9999 (sinks format them as dates).
_MAX_MS = 253_402_300_799_999


def _number(d: dict[str, Any], name: str, optional: bool = False) -> float | None:
    """A finite number field, kept as written (an integer too large for a float is refused)."""
    value = _field(d, name, (int, float), optional=optional)
    if isinstance(value, int) and abs(value) > 2**53:
        raise RecordError("invalid_value", f"'{name}' is out of range")
    return value


def _millis(d: dict[str, Any], name: str) -> int:
    value: int = _field(d, name, int)
    if not 0 <= value <= _MAX_MS:
        raise RecordError("invalid_value", f"'{name}' is not a time between 1970 and 9999")
    return value


def fingerprint_of(kind: str, key: str, window: str, signal: str, rule: str) -> str:
    """Stable 16-hex-digit fingerprint of an alerting series (key + signal + rule).

    >>> fingerprint_of("entity", "$NVDA", "tumbling_60000", "volume", "robust_zscore")
    'cccd1454c5f33e88'
    """
    raw = f"{kind}\x1f{key}\x1f{window}\x1f{signal}\x1f{rule}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A state transition of an alert, as written to the alerts topic.

    ``episode_start_ms`` is the start of the window in which the alert began firing; with
    the fingerprint and the status it makes :attr:`idempotency_key`, which is the same
    every time the same transition is (re)delivered.
    """

    fingerprint: str
    status: Status
    severity: Literal["warning", "critical"]
    kind: str
    key: str
    signal: str
    rule: str
    window: str
    start_ms: int
    end_ms: int
    episode_start_ms: int
    observed: float
    baseline: float | None
    score: float
    support: int
    examples: tuple[dict[str, Any], ...] = field(default=())
    dashboard_url: str = ""

    @property
    def idempotency_key(self) -> str:
        """``<fingerprint>-<episode_start_ms>-<status>``: one per transition."""
        return f"{self.fingerprint}-{self.episode_start_ms}-{self.status}"

    def summary(self) -> str:
        """One human line, e.g. ``FIRING warning: entity $NVDA volume 120 vs 14 (score 0.91)``."""
        base = "?" if self.baseline is None else f"{self.baseline:.3g}"
        return (
            f"{self.status.upper()} {self.severity}: {self.kind} {self.key} {self.signal} "
            f"{self.observed:.3g} vs {base} (score {self.score:.2f})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including the idempotency key."""
        d = asdict(self)
        d["examples"] = list(self.examples)
        d["idempotency_key"] = self.idempotency_key
        return d

    def to_json(self) -> bytes:
        """Serialize for the alerts topic."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> AlertEvent:
        """Parse a record of the alerts topic, checked like ``WindowStat.from_json``.

        Types, finite numbers, the closed sets :data:`STATUSES`, :data:`SEVERITIES`,
        :data:`KINDS` and :data:`SIGNALS`, strings and examples within
        :data:`~newswatch.io.schemas.LIMITS`. Unknown fields (``idempotency_key``, fields of
        later versions) are ignored. Raises :class:`~newswatch.io.schemas.RecordError` (a
        ``ValueError``) naming the reason; JSON and UTF-8 errors are ``ValueError`` too.
        """
        d = load_json(raw)
        lim = LIMITS
        choices = (("status", STATUSES), ("severity", SEVERITIES), ("kind", KINDS), ("signal", SIGNALS))
        chosen: dict[str, Any] = {}
        for name, allowed in choices:
            value = _field(d, name, str, _NAME_CHARS)
            if value not in allowed:
                raise RecordError("invalid_value", f"'{name}' must be one of {', '.join(allowed)}")
            chosen[name] = value
        examples = _field(d, "examples", list, lim.examples, optional=True) or []
        if not all(_small_example(e) for e in examples):
            raise RecordError(
                "wrong_type", "'examples' must be small objects (id, text, url, score, entities)"
            )
        start_ms, end_ms = _millis(d, "start_ms"), _millis(d, "end_ms")
        support = _field(d, "support", int)
        if end_ms <= start_ms or not 0 <= support < 2**63:
            raise RecordError("invalid_value", "need start_ms < end_ms and 0 <= support < 2**63")
        observed, score = _number(d, "observed"), _number(d, "score")
        assert observed is not None and score is not None
        event = cls(
            fingerprint=_field(d, "fingerprint", str, _NAME_CHARS),
            status=chosen["status"],
            severity=chosen["severity"],
            kind=chosen["kind"],
            key=_field(d, "key", str, lim.key),
            signal=chosen["signal"],
            rule=_field(d, "rule", str, _NAME_CHARS),
            window=_field(d, "window", str, _NAME_CHARS),
            start_ms=start_ms,
            end_ms=end_ms,
            episode_start_ms=_millis(d, "episode_start_ms"),
            observed=observed,
            baseline=_number(d, "baseline", optional=True),
            score=score,
            support=support,
            examples=tuple(examples),
            dashboard_url=_field(d, "dashboard_url", str, lim.url, optional=True) or "",
        )
        check_encodable(raw, event)
        return event
