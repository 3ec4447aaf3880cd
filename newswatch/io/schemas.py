"""The records that travel between stages, as frozen dataclasses with JSON round-trips.

Wire format is UTF-8 JSON. ``Post`` is the input contract; ``ScoredPost`` is what
the classify stage writes; ``WindowStat`` is one closed or updated window;
``DeadLetter`` wraps rejected input with the reason and the original bytes
(base64) so nothing is lost.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from newswatch.timeparse import parse_iso

__all__ = ["DeadLetter", "Post", "ScoredPost", "Sentiment", "WindowStat"]

Sentiment = Literal["bearish", "bullish", "neutral"]
WindowKind = Literal["topic", "entity", "source", "global"]


@dataclass(frozen=True, slots=True)
class Post:
    """A news headline or social post as published on the input topic."""

    id: str
    text: str
    source: str
    published_at: datetime
    url: str | None = None
    author: str | None = None
    lang: str | None = None
    entities: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (ISO-8601 timestamps, lists for tuples)."""
        d = asdict(self)
        d["published_at"] = self.published_at.isoformat()
        d["entities"] = list(self.entities)
        return d


@dataclass(frozen=True, slots=True)
class ScoredPost:
    """A post with its topic and sentiment, as written by the classify stage.

    Two clocks: ``post.published_at`` is the *event* time (when the post was published at
    its source; the aggregator's windows use it), ``record_ms`` is the Kafka timestamp of
    the input record on the posts topic (when a producer sent it; end-to-end latency is
    ``scored_ms - record_ms``). Records written before ``record_ms`` was named so carry the
    same value as ``published_ms``; :meth:`from_json` still reads them.
    """

    post: Post
    topic: str
    topic_prob: float
    sentiment: Sentiment
    sentiment_probs: dict[str, float]
    score: float
    model_version: str
    record_ms: int  # Kafka timestamp of the input record on the posts topic (when it was sent)
    scored_ms: int  # when the scored batch was produced
    inference_ms: float  # engine time of the batch this post was in

    def to_json(self) -> bytes:
        """Serialize for the scored topic."""
        d = {
            **self.post.to_dict(),
            "topic": self.topic,
            "topic_prob": self.topic_prob,
            "sentiment": self.sentiment,
            "sentiment_probs": self.sentiment_probs,
            "score": self.score,
            "model_version": self.model_version,
            "record_ms": self.record_ms,
            "scored_ms": self.scored_ms,
            "inference_ms": self.inference_ms,
        }
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> ScoredPost:
        """Parse a record of the scored topic (trusted: written by newswatch)."""
        d = json.loads(raw)
        post = Post(
            id=d["id"],
            text=d["text"],
            source=d["source"],
            published_at=parse_iso(d["published_at"]),
            url=d.get("url"),
            author=d.get("author"),
            lang=d.get("lang"),
            entities=tuple(d.get("entities") or ()),
        )
        return cls(
            post=post,
            topic=d["topic"],
            topic_prob=float(d["topic_prob"]),
            sentiment=d["sentiment"],
            sentiment_probs={k: float(v) for k, v in d["sentiment_probs"].items()},
            score=float(d["score"]),
            model_version=d["model_version"],
            record_ms=int(d["record_ms"] if "record_ms" in d else d["published_ms"]),
            scored_ms=int(d["scored_ms"]),
            inference_ms=float(d["inference_ms"]),
        )


@dataclass(frozen=True, slots=True)
class WindowStat:
    """Aggregates of one key in one window (event time)."""

    kind: WindowKind
    key: str
    window: str  # e.g. "tumbling_60000" or "hopping_300000_60000"
    start_ms: int
    end_ms: int
    count: int
    mean_score: float
    negative_share: float
    late: int = 0
    examples: tuple[dict[str, Any], ...] = field(default=())  # most negative posts: id, text, url, score
    final: bool = False  # True once the watermark passed end + grace: counts never change again

    def to_json(self) -> bytes:
        """Serialize for the windows topic."""
        d = asdict(self)
        d["examples"] = list(self.examples)
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> WindowStat:
        """Parse a record of the windows topic."""
        d = json.loads(raw)
        d["examples"] = tuple(d.get("examples") or ())
        return cls(**d)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message: why, where it came from, and its exact bytes."""

    stage: str
    reason: str  # closed set, e.g. invalid_json, invalid_utf8, missing_field, empty_text, too_large
    detail: str
    topic: str
    partition: int
    offset: int
    raw: bytes
    at_ms: int

    def to_json(self) -> bytes:
        """Serialize for the dead-letter topic; ``raw`` is base64."""
        d = {
            "stage": self.stage,
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "raw_b64": base64.b64encode(self.raw).decode(),
            "at_ms": self.at_ms,
        }
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetter:
        """Parse a record of the dead-letter topic."""
        d = json.loads(raw)
        return cls(
            stage=d["stage"],
            reason=d["reason"],
            detail=d["detail"],
            topic=d["topic"],
            partition=int(d["partition"]),
            offset=int(d["offset"]),
            raw=base64.b64decode(d["raw_b64"]),
            at_ms=int(d["at_ms"]),
        )
