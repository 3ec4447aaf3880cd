"""The alert event: one firing or resolved transition of one (key, signal, rule)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["AlertEvent", "Status", "fingerprint_of"]

Status = Literal["firing", "resolved"]


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
        """Parse a record of the alerts topic."""
        d = json.loads(raw)
        d.pop("idempotency_key", None)
        d["examples"] = tuple(d.get("examples") or ())
        return cls(**d)
