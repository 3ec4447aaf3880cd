"""The records that travel between stages, as frozen dataclasses with JSON round-trips.

Wire format is UTF-8 JSON. ``Post`` is the input contract; ``ScoredPost`` is what
the classify stage writes; ``WindowStat`` is one closed or updated window;
``DeadLetter`` wraps rejected input with the reason and the original bytes
(base64) so nothing is lost.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

import orjson

from newswatch.timeparse import parse_iso

__all__ = [
    "LIMITS",
    "MAX_RECORD_BYTES",
    "DeadLetter",
    "FieldLimits",
    "Post",
    "RecordError",
    "ScoredPost",
    "Sentiment",
    "WindowStat",
    "check_encodable",
    "load_json",
    "post_limit_violation",
]

Sentiment = Literal["bearish", "bullish", "neutral"]
WindowKind = Literal["topic", "entity", "source", "global"]
_SENTIMENTS = ("bearish", "bullish", "neutral")
_KINDS = ("topic", "entity", "source", "global")


@dataclass(frozen=True, slots=True)
class FieldLimits:
    """The longest value (in characters) each field that travels between stages may have.

    The classify stage dead-letters posts beyond them (``field_too_long``), and every stage
    refuses records beyond them. With these limits a scored record stays under about 150 KB,
    a window or alert record under 40 KB: far below :data:`MAX_RECORD_BYTES`.
    """

    id: int = 256
    text: int = 20_000
    source: int = 128
    url: int = 2_048
    author: int = 256
    lang: int = 16
    entity: int = 64
    entities: int = 32
    key: int = 256  # a window key: a topic, an entity, a source
    examples: int = 10  # example posts carried by one window or alert
    example_text: int = 1_000


#: The limits every stage enforces.
LIMITS = FieldLimits()

#: The largest record a newswatch producer sends (Kafka's default ``message.max.bytes`` is
#: 1,048,588); the field limits keep every record far below it.
MAX_RECORD_BYTES = 1_000_000


class RecordError(ValueError):
    """A record that does not match its schema: ``reason`` is the dead-letter reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# A JSON escape of a UTF-16 surrogate: only then can a parsed string be a lone surrogate, which a
# record built from it could not encode again (it would fail every stage that writes it).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def load_json(raw: bytes | str) -> Any:
    """``json.loads`` for records; JSON nested too deep to parse is a :class:`RecordError` too."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise RecordError("invalid_json", "nested too deep to parse") from None


def _dumps_stdlib(d: Any) -> bytes:
    """The reference serialisation: compact, non-ASCII kept (raises ``UnicodeEncodeError`` on a
    lone surrogate, which :func:`check_encodable` relies on)."""
    return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()


def _dumps(d: Any) -> bytes:
    """:func:`_dumps_stdlib`'s output, from orjson where orjson writes the same.

    orjson writes the same bytes as ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))``
    for strings, integers, None, booleans and every float except three kinds, which its callers
    check for first (see :func:`_plain_float` and :func:`_plain_examples`): non-finite floats
    (``NaN`` becomes ``null``), and floats of magnitude below 1e-4 (orjson writes ``1e-5`` as
    ``0.00001`` and ``2.5e-07`` as ``2.5e-7``; the value read back is the same). What orjson
    refuses (a lone surrogate, an integer beyond 64 bits, an unknown type) goes to the reference.
    """
    try:
        return orjson.dumps(d)
    except orjson.JSONEncodeError:
        return _dumps_stdlib(d)


def _plain_float(x: float) -> bool:
    """True when orjson writes ``x`` exactly as ``json.dumps`` does (see :func:`_dumps`)."""
    return (x == 0.0 or not -1e-4 < x < 1e-4) and math.isfinite(x)


def _plain_examples(examples: tuple[dict[str, Any], ...]) -> bool:
    """True when no value of these example posts is a float that orjson writes differently."""
    floats = [v for e in examples for v in e.values() if type(v) is float]
    # a sum of finite floats is finite unless it overflows (then json writes them: merely slower)
    return all([v == 0.0 or not -1e-4 < v < 1e-4 for v in floats]) and math.isfinite(sum(floats))


#: A record may skip the stdlib parser when orjson reads it exactly as ``json`` does: orjson
#: nests 1,024 levels deep where ``json`` may stop earlier, so large payloads with many brackets
#: are left to ``json`` (a payload up to 512 bytes cannot nest 256 levels).
def _orjson_reads_it(raw: bytes | str) -> bool:
    if len(raw) <= 512:
        return True
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{") < 256
    return raw.count(b"[") + raw.count(b"{") < 256


def check_encodable(raw: bytes | str, record: Any) -> None:
    """:class:`RecordError` when ``record``, parsed from ``raw``, holds a lone surrogate.

    Only a surrogate escape in ``raw`` can produce one, so most records cost a regex search.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if _SURROGATE_ESCAPE.search(data):
        try:
            record.to_json()
        except UnicodeEncodeError:
            raise RecordError("invalid_utf8", "a string holds a lone surrogate escape") from None


def _field(
    d: Any, name: str, kind: type | tuple[type, ...], limit: int | None = None, optional: bool = False
) -> Any:
    """``d[name]`` checked for type and length, or :class:`RecordError`."""
    if not isinstance(d, dict):
        raise RecordError("not_object", f"expected a JSON object, got {type(d).__name__}")
    value = d.get(name)
    if value is None:
        if optional:
            return None
        raise RecordError("missing_field", f"'{name}' is required")
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise RecordError("wrong_type", f"'{name}' must not be a boolean")
    if not isinstance(value, kind):
        raise RecordError("wrong_type", f"'{name}' has the wrong type ({type(value).__name__})")
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError("wrong_type", f"'{name}' is not a finite number")
    if limit is not None and isinstance(value, str | list | dict) and len(value) > limit:
        raise RecordError("field_too_long", f"'{name}' has {len(value)} items or characters (limit {limit})")
    return value


def _small_example(example: Any) -> bool:
    """An example post of a window or alert: a few fields, each within :data:`LIMITS`."""
    if not isinstance(example, dict) or len(example) > 8:
        return False
    for name, value in example.items():
        if isinstance(value, str):
            if len(value) > (LIMITS.example_text if name == "text" else LIMITS.url):
                return False
        elif isinstance(value, list):
            if len(value) > LIMITS.entities or not all(
                isinstance(v, str) and len(v) <= LIMITS.entity for v in value
            ):
                return False
        elif value is not None and not isinstance(value, int | float):
            return False
    return True


def post_limit_violation(post: Post) -> str | None:
    """The first field of ``post`` beyond :data:`LIMITS`, described, or None."""
    lim = LIMITS
    url, author, lang, entities = post.url, post.author, post.lang, post.entities
    if (  # the common case first: every field within its limit (the decoder checks every post)
        len(post.id) <= lim.id
        and len(post.text) <= lim.text
        and len(post.source) <= lim.source
        and (url is None or len(url) <= lim.url)
        and (author is None or len(author) <= lim.author)
        and (lang is None or len(lang) <= lim.lang)
        and len(entities) <= lim.entities
        and (not entities or max(map(len, entities)) <= lim.entity)
    ):
        return None
    for name, value, limit in (
        ("id", post.id, lim.id),
        ("text", post.text, lim.text),
        ("source", post.source, lim.source),
        ("url", post.url, lim.url),
        ("author", post.author, lim.author),
        ("lang", post.lang, lim.lang),
    ):
        if value is not None and len(value) > limit:
            return f"'{name}' has {len(value)} characters (limit {limit})"
    if len(post.entities) > lim.entities:
        return f"'entities' has {len(post.entities)} items (limit {lim.entities})"
    long = next((e for e in post.entities if len(e) > lim.entity), None)
    if long is not None:
        return f"an entity has {len(long)} characters (limit {lim.entity})"
    return None


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
        """Serialize for the scored topic (the classify stage writes one per post).

        The fields of :meth:`Post.to_dict` then the scores, written by orjson; a non-finite
        number is written by ``json`` as before (``NaN``, which :meth:`from_json` refuses as
        ``wrong_type``), and so is a record orjson refuses (a lone surrogate raises
        ``UnicodeEncodeError``). Floats below 1e-4 read back the same but may be written in
        another notation than ``json``'s (``0.00001`` for ``1e-05``).
        """
        post = self.post
        d = {
            "id": post.id,
            "text": post.text,
            "source": post.source,
            "published_at": post.published_at.isoformat(),
            "url": post.url,
            "author": post.author,
            "lang": post.lang,
            "entities": list(post.entities),
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
        # one check for every number: a sum of finite numbers is finite unless it overflows
        # (then json writes it, which is merely slower)
        if math.isfinite(
            self.topic_prob + self.score + self.inference_ms + sum(self.sentiment_probs.values())
        ):
            return _dumps(d)
        return _dumps_stdlib(d)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ScoredPost:
        """Parse a record of the scored topic, checked against the schema and :data:`LIMITS`.

        Raises :class:`RecordError` (a ``ValueError``) naming the reason; JSON errors are
        ``ValueError`` too.

        orjson reads the record first; only a record it reads and that passes every check is
        returned from that read (orjson's strings hold no lone surrogate). Anything else is read
        again by ``json`` and checked again, so errors and reasons are those of ``json``: orjson
        refuses what ``json`` reads (``NaN``, lone surrogate escapes) and reads integers beyond
        64 bits as floats (``record_ms`` is then no integer and the second read decides).
        """
        if _orjson_reads_it(raw):
            try:
                scored = cls._from_plain(orjson.loads(raw))
            except Exception:  # the reference read below says why, or accepts what only json reads
                scored = None
            if scored is not None:
                return scored
        scored = cls._from_dict(load_json(raw))
        check_encodable(raw, scored)
        return scored

    @classmethod
    def _from_plain(cls, d: Any) -> ScoredPost | None:
        """The fast path of :meth:`from_json`: what :meth:`_from_dict` returns for ``d`` (read
        by orjson, so of exact types: no subclass, no non-finite float), or None where
        ``_from_dict`` might refuse it. Every check of ``_from_dict`` is here; none writes a reason.
        """
        if type(d) is not dict:
            return None
        lim, get = LIMITS, d.get
        entities = get("entities")
        if entities is None:
            entities = ()
        elif type(entities) is not list or len(entities) > lim.entities:
            return None
        for entity in entities:
            if type(entity) is not str or len(entity) > lim.entity:
                return None
        post_id, text, source, stamp = get("id"), get("text"), get("source"), get("published_at")
        if not (
            type(post_id) is str
            and len(post_id) <= lim.id
            and type(text) is str
            and len(text) <= lim.text
            and type(source) is str
            and len(source) <= lim.source
            and type(stamp) is str
            and len(stamp) <= 64
        ):
            return None
        url, author, lang = get("url"), get("author"), get("lang")
        if not (
            (url is None or (type(url) is str and len(url) <= lim.url))
            and (author is None or (type(author) is str and len(author) <= lim.author))
            and (lang is None or (type(lang) is str and len(lang) <= lim.lang))
        ):
            return None
        sentiment, probs, topic, version = (
            get("sentiment"),
            get("sentiment_probs"),
            get("topic"),
            get("model_version"),
        )
        if not (
            type(sentiment) is str
            and sentiment in _SENTIMENTS
            and type(probs) is dict
            and len(probs) <= 8
            and type(topic) is str
            and len(topic) <= lim.key
            and type(version) is str
            and len(version) <= lim.key
        ):
            return None
        for value in probs.values():
            if type(value) is not float and type(value) is not int:
                return None
        topic_prob, score, inference_ms = get("topic_prob"), get("score"), get("inference_ms")
        record_ms, scored_ms = get("record_ms", get("published_ms")), get("scored_ms")
        for number in (topic_prob, score, inference_ms):
            if type(number) is not float and type(number) is not int:
                return None
        if type(record_ms) is not int or type(scored_ms) is not int:
            return None
        try:
            published = parse_iso(stamp)
        except ValueError:
            return None
        post = Post(post_id, text, source, published, url, author, lang, tuple(entities))
        return cls(
            post,
            topic,
            float(topic_prob),  # type: ignore[arg-type]
            sentiment,  # type: ignore[arg-type]
            {k: float(v) for k, v in probs.items()},
            float(score),  # type: ignore[arg-type]
            version,
            record_ms,
            scored_ms,
            float(inference_ms),  # type: ignore[arg-type]
        )

    @classmethod
    def _from_dict(cls, d: Any) -> ScoredPost:
        """The checks of :meth:`from_json` on a parsed record."""
        lim, num = LIMITS, (int, float)
        entities = _field(d, "entities", list, lim.entities, optional=True) or []
        if not all(isinstance(e, str) and len(e) <= lim.entity for e in entities):
            raise RecordError("wrong_type", f"'entities' must be strings of at most {lim.entity} characters")
        stamp = _field(d, "published_at", str, 64)
        try:
            published = parse_iso(stamp)
        except ValueError as exc:
            raise RecordError("bad_timestamp", f"'published_at': {exc}") from None
        post = Post(
            id=_field(d, "id", str, lim.id),
            text=_field(d, "text", str, lim.text),
            source=_field(d, "source", str, lim.source),
            published_at=published,
            url=_field(d, "url", str, lim.url, optional=True),
            author=_field(d, "author", str, lim.author, optional=True),
            lang=_field(d, "lang", str, lim.lang, optional=True),
            entities=tuple(entities),
        )
        sentiment = _field(d, "sentiment", str, 16)
        if sentiment not in _SENTIMENTS:
            raise RecordError("wrong_type", f"'sentiment' must be one of {', '.join(_SENTIMENTS)}")
        probs = _field(d, "sentiment_probs", dict, 8)
        if not all(isinstance(v, num) and not isinstance(v, bool) for v in probs.values()):
            raise RecordError("wrong_type", "'sentiment_probs' must map labels to numbers")
        record_ms = d.get("record_ms", d.get("published_ms")) if isinstance(d, dict) else None
        scored = cls(
            post=post,
            topic=_field(d, "topic", str, lim.key),
            topic_prob=float(_field(d, "topic_prob", num)),
            sentiment=sentiment,
            sentiment_probs={str(k): float(v) for k, v in probs.items()},
            score=float(_field(d, "score", num)),
            model_version=_field(d, "model_version", str, lim.key),
            record_ms=int(_field({"record_ms": record_ms}, "record_ms", int)),
            scored_ms=int(_field(d, "scored_ms", int)),
            inference_ms=float(_field(d, "inference_ms", num)),
        )
        return scored


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
        """Serialize for the windows topic (a field loop, not ``asdict``'s deep copies: the
        aggregator writes one per changed window)."""
        d = {f: getattr(self, f) for f in _WINDOW_FIELDS}
        d["examples"] = list(self.examples)
        # byte for byte json.dumps' output (tests/stream/test_aggregate_windows.py): orjson
        # unless a float would be written in another notation (see _dumps)
        if (
            _plain_float(self.mean_score)
            and _plain_float(self.negative_share)
            and _plain_examples(self.examples)
        ):
            return _dumps(d)
        return _dumps_stdlib(d)

    @classmethod
    def from_json(cls, raw: bytes | str) -> WindowStat:
        """Parse a record of the windows topic, checked against the schema and :data:`LIMITS`.

        Raises :class:`RecordError` (a ``ValueError``) naming the reason.
        """
        d = load_json(raw)
        lim, num = LIMITS, (int, float)
        kind = _field(d, "kind", str, 16)
        if kind not in _KINDS:
            raise RecordError("wrong_type", f"'kind' must be one of {', '.join(_KINDS)}")
        examples = _field(d, "examples", list, lim.examples, optional=True) or []
        if not all(_small_example(e) for e in examples):
            raise RecordError(
                "wrong_type", "'examples' must be small objects (id, text, url, score, entities)"
            )
        start_ms, end_ms = _field(d, "start_ms", int), _field(d, "end_ms", int)
        count = _field(d, "count", int)
        if end_ms <= start_ms or count < 0:
            raise RecordError("invalid_value", "need start_ms < end_ms and count >= 0")
        stat = cls(
            kind=kind,
            key=_field(d, "key", str, lim.key),
            window=_field(d, "window", str, 64),
            start_ms=start_ms,
            end_ms=end_ms,
            count=count,
            mean_score=float(_field(d, "mean_score", num)),
            negative_share=float(_field(d, "negative_share", num)),
            late=int(_field(d, "late", int, optional=True) or 0),
            examples=tuple(examples),
            final=bool(_field(d, "final", bool, optional=True) or False),
        )
        check_encodable(raw, stat)
        return stat


_WINDOW_FIELDS = tuple(f.name for f in fields(WindowStat))


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
