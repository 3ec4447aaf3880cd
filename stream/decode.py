"""Bytes from the posts topic → a validated :class:`~newswatch.io.schemas.Post`, or a rejection.

:func:`decode_post` never raises on any input: every failure becomes a
:class:`Rejection` with a reason from the closed set :data:`REASONS` and a short
human-readable detail, so the caller can dead-letter it and keep going.

Policy
------
* Size is checked first: more than ``max_message_bytes`` → ``too_large``.
* The payload must be UTF-8 (``invalid_utf8``) JSON (``invalid_json``; this includes
  nesting too deep for the parser) whose top level is an object (``not_object``).
* Every field is bounded (:data:`newswatch.io.schemas.LIMITS`: text 20,000 characters, url
  2,048, source 128, author 256, lang 16, 32 entities of 64); a post beyond a limit is
  ``field_too_long``, so no record downstream can grow past the broker's message limit.
* Required: ``id`` (non-empty string of at most 256 characters, or an integer, which is
  turned into its decimal string; otherwise ``bad_id``), ``text``, ``source`` and
  ``published_at`` (strings; absent or null → ``missing_field``, another type →
  ``wrong_type``). Optional ``url``, ``author``, ``lang``: string or null.
  Unknown fields are ignored.
* ``published_at`` is ISO-8601. A naive timestamp is taken as UTC. Timestamps before
  January 1 of ``oldest_published_year`` (default 1990) are ``bad_timestamp``; more than
  ``max_future_skew_s`` (default 5 minutes) after the moment the post is read are
  ``future_timestamp``: a clock that fast is wrong, and its posts would move the
  aggregator's event time ahead of every other feed's. Old but plausible posts (a 2014 replay) are accepted;
  the aggregator decides about lateness.
* Text: the original is kept unchanged in ``Post.text``; the classify stage hands it to the
  engine, which cleans it with :func:`newswatch.models.text.clean_text`, the one clean-up
  training uses too. :attr:`Decoded.clean_text` is the same clean-up cut to
  ``max_text_chars``: HTML entities unescaped, control characters, zero-width characters,
  bidirectional overrides/isolates and lone surrogates replaced by spaces, URLs dropped,
  whitespace collapsed. Empty after cleaning → ``empty_text``.
* ``entities``: when absent or null they are extracted from the text: ``$AAPL`` cashtags
  (upper-cased, with the ``$``) plus the names of the optional watch-list found as whole
  words (case-insensitive, reported as written in the watch-list). When given, they must be
  a list of strings (else ``wrong_type``); blanks are dropped and duplicates removed. At most
  ``max_entities`` are kept.

Speed
-----
The classify stage decodes every post, so the common case has a fast path: ``orjson`` parses
the bytes and :meth:`PostDecoder._accept` checks the fields without building anything it does
not keep. The fast path only ever *accepts*; whatever it does not accept (orjson refuses the
bytes, or a check fails) is decoded again by the reference path, :meth:`PostDecoder._decode_exact`
(``bytes.decode`` + ``json.loads`` + :meth:`PostDecoder._validate`), which alone writes
rejections, so reasons and details are exactly the standard library's. Where the two parsers
differ, the fast path gives way: orjson refuses lone surrogate escapes, ``NaN``/``Infinity``
and numbers beyond a double (the reference path then decides); it reads integers beyond 64 bits
as floats (an ``id`` or a string field that is a float is not accepted, so the reference path
decides); and it nests 1,024 levels deep where ``json`` may give up earlier (payloads of more
than 512 bytes holding 256 brackets or more skip the fast path).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from newswatch.io.schemas import LIMITS, Post, post_limit_violation
from newswatch.models.text import clean_text
from newswatch.timeparse import parse_iso_or_none

__all__ = ["REASONS", "Decoded", "PostDecoder", "Rejection", "clean_text", "decode_post", "extract_entities"]

#: Every reason a message can be rejected for (the ``reason`` label of the dead-letter metric).
REASONS = (
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "bad_id",
    "empty_text",
    "bad_timestamp",
    "future_timestamp",
    "field_too_long",
)

_MAX_ID_CHARS = 256
_MAX_ENTITY_CHARS = 64
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,5}(?:\.[A-Za-z]{1,2})?)(?![\w])")
#: Payloads up to this size always take the fast path: they cannot nest deeper than half of it.
_SMALL_PAYLOAD = 512
#: A larger payload with at least this many brackets skips it (``json`` may refuse its nesting).
_MANY_BRACKETS = 256


@dataclass(frozen=True, slots=True)
class Decoded:
    """A valid post and its cleaned text (entities were found in it; the engine cleans
    ``post.text`` the same way itself)."""

    post: Post
    clean_text: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was rejected: ``reason`` is one of :data:`REASONS`."""

    reason: str
    detail: str


def extract_entities(text: str, watchlist: Sequence[str] = ()) -> tuple[str, ...]:
    """``$CASHTAGS`` (upper-cased) then watch-list names found in ``text``, in order, deduplicated.

    >>> extract_entities("$aapl beats, $TSLA falls; Apple and $AAPL again, $100", ["Apple"])
    ('$AAPL', '$TSLA', 'Apple')
    """
    found = [f"${tag.upper()}" for tag in _CASHTAG.findall(text)] if "$" in text else []
    if watchlist:
        lowered = text.casefold()
        for name in watchlist:
            if name and _name_pattern(name).search(lowered):
                found.append(name)
    return tuple(dict.fromkeys(found))


@lru_cache(maxsize=4_096)
def _name_pattern(name: str) -> re.Pattern[str]:
    """A watch-list name as a whole word of casefolded text."""
    return re.compile(rf"(?<!\w){re.escape(name.casefold())}(?!\w)")


class PostDecoder:
    """Decodes raw messages with one set of limits; reusable and thread-safe.

    Parameters
    ----------
    max_message_bytes
        Larger payloads are rejected as ``too_large`` before parsing.
    max_text_chars
        :attr:`Decoded.clean_text` is cut to this many characters.
    watchlist
        Company names extracted as entities in addition to cashtags.
    max_future_skew_s, oldest_published_year
        The accepted ``published_at`` range (see the module docstring).
    max_entities
        Entities kept per post.
    """

    def __init__(
        self,
        *,
        max_message_bytes: int = 1_048_576,
        max_text_chars: int = 20_000,
        watchlist: Iterable[str] = (),
        max_future_skew_s: int = 300,
        oldest_published_year: int = 1990,
        max_entities: int = 32,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_text_chars = max_text_chars
        self.watchlist = tuple(watchlist)
        self.max_future_skew = timedelta(seconds=max_future_skew_s)
        self.oldest = datetime(oldest_published_year, 1, 1, tzinfo=UTC)
        self.max_entities = max_entities

    @classmethod
    def from_settings(cls, settings: Any) -> PostDecoder:
        """A decoder configured from a :class:`~newswatch.settings.stream.ClassifySettings`."""
        return cls(
            max_message_bytes=settings.max_message_bytes,
            max_text_chars=settings.max_text_chars,
            watchlist=settings.watchlist,
            max_future_skew_s=settings.max_future_skew_s,
            oldest_published_year=settings.oldest_published_year,
            max_entities=settings.max_entities,
        )

    def decode(self, raw: bytes | None, now: datetime | None = None) -> Decoded | Rejection:
        """Validate ``raw``; never raises."""
        try:
            return self._decode(raw, now or datetime.now(UTC))
        except Exception as exc:  # defensive: a bug here must not stop the stream
            return Rejection("invalid_json", f"undecodable: {type(exc).__name__}: {exc}"[:300])

    def _decode(self, raw: bytes | None, now: datetime) -> Decoded | Rejection:
        if raw is None:
            return Rejection("invalid_json", "empty message (null value)")
        size = len(raw)
        if size > self.max_message_bytes:
            return Rejection("too_large", f"{size} bytes > limit {self.max_message_bytes}")
        if type(raw) is bytes and (
            size <= _SMALL_PAYLOAD or raw.count(b"[") + raw.count(b"{") < _MANY_BRACKETS
        ):
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass  # the reference path says why (or accepts what only json reads)
            else:
                if type(obj) is dict:
                    accepted = self._accept(obj, now)
                    if accepted is not None:
                        return accepted
        return self._decode_exact(raw, now)

    def _accept(self, obj: dict[str, Any], now: datetime) -> Decoded | None:
        """The fast path: the :class:`Decoded` that :meth:`_validate` would return for ``obj``
        (parsed by orjson), or None where ``_validate`` might reject it or decide otherwise.

        Every check of :meth:`_validate` is here in some order; none of them writes a reason.
        orjson's strings hold no lone surrogates, so the encodability check is not needed.
        """
        get = obj.get
        post_id, text, source, stamp = get("id"), get("text"), get("source"), get("published_at")
        if type(post_id) is int:  # a bool is not: its type is bool
            post_id = str(post_id)
        elif type(post_id) is not str or not post_id.strip():
            return None
        if len(post_id) > _MAX_ID_CHARS or type(text) is not str or type(stamp) is not str:
            return None
        if type(source) is not str or not (source := source.strip()):
            return None
        url, author, lang = get("url"), get("author"), get("lang")
        if (
            (url is not None and type(url) is not str)
            or (author is not None and type(author) is not str)
            or (lang is not None and type(lang) is not str)
        ):
            return None
        published = parse_iso_or_none(stamp)
        if published is None or published < self.oldest or published > now + self.max_future_skew:
            return None
        cleaned = clean_text(text, max_chars=self.max_text_chars)
        if not cleaned:
            return None
        entities = get("entities")
        if entities is None:
            found = extract_entities(cleaned, self.watchlist)
        elif type(entities) is list:
            kept: dict[str, None] = {}
            for entity in entities:
                if type(entity) is not str:
                    return None
                entity = entity.strip()
                if entity:
                    kept[entity[:_MAX_ENTITY_CHARS]] = None
            found = tuple(kept)
        else:
            return None
        # positional (id, text, source, published_at, url, author, lang, entities): faster
        post = Post(
            post_id,
            text,
            source,
            published,
            url,
            author,
            lang,
            found[: min(self.max_entities, LIMITS.entities)],
        )
        if post_limit_violation(post) is not None:
            return None
        return Decoded(post, cleaned)

    def _decode_exact(self, raw: bytes, now: datetime) -> Decoded | Rejection:
        """The reference path (the standard library's parser): every rejection is written here."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejection("invalid_utf8", f"byte {exc.start}: {exc.reason}")
        try:
            obj = json.loads(text)
        except RecursionError:
            return Rejection("invalid_json", "nested too deeply")
        except ValueError as exc:
            return Rejection("invalid_json", str(exc)[:200])
        if not isinstance(obj, dict):
            return Rejection("not_object", f"top level is {type(obj).__name__}, expected an object")
        return self._validate(obj, now)

    def _validate(self, obj: dict[str, Any], now: datetime) -> Decoded | Rejection:
        for name in ("id", "text", "source", "published_at"):
            if obj.get(name) is None:
                return Rejection("missing_field", f"'{name}' is required")
        post_id = obj["id"]
        if isinstance(post_id, int) and not isinstance(post_id, bool):
            post_id = str(post_id)
        if not isinstance(post_id, str) or not post_id.strip() or len(post_id) > _MAX_ID_CHARS:
            return Rejection("bad_id", f"'id' must be a non-empty string of at most {_MAX_ID_CHARS} chars")
        for name in ("text", "source", "published_at"):
            if not isinstance(obj[name], str):
                return Rejection("wrong_type", f"'{name}' must be a string, got {type(obj[name]).__name__}")
        optional: dict[str, str | None] = {}
        for name in ("url", "author", "lang"):
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                return Rejection(
                    "wrong_type", f"'{name}' must be a string or null, got {type(value).__name__}"
                )
            optional[name] = value
        strings = [post_id, obj["text"], obj["source"], *(v for v in optional.values() if v is not None)]
        if isinstance(obj.get("entities"), list):
            strings += [e for e in obj["entities"] if isinstance(e, str)]
        if not all(_encodable(s) for s in strings):
            return Rejection("invalid_utf8", "a string contains a lone surrogate escape")
        if not obj["source"].strip():
            return Rejection("missing_field", "'source' is empty")
        published = parse_iso_or_none(obj["published_at"])
        if published is None:
            return Rejection("bad_timestamp", f"'published_at' is not ISO-8601: {obj['published_at'][:64]!r}")
        if published < self.oldest:
            return Rejection(
                "bad_timestamp", f"'published_at' {published.isoformat()} is before {self.oldest:%Y}"
            )
        if published > now + self.max_future_skew:
            ahead = (published - now).total_seconds()
            return Rejection(
                "future_timestamp",
                f"'published_at' {published.isoformat()} is {ahead:.0f} s ahead of the time it was read "
                f"(allowed: {self.max_future_skew.total_seconds():.0f} s); fix the producer's clock",
            )
        cleaned = clean_text(obj["text"], max_chars=self.max_text_chars)
        if not cleaned:
            return Rejection("empty_text", "'text' is empty after removing control characters")
        entities = obj.get("entities")
        if entities is None:
            found = extract_entities(cleaned, self.watchlist)
        elif isinstance(entities, list) and all(isinstance(e, str) for e in entities):
            found = tuple(dict.fromkeys(e.strip()[:_MAX_ENTITY_CHARS] for e in entities if e.strip()))
        else:
            return Rejection("wrong_type", "'entities' must be a list of strings")
        post = Post(
            id=post_id,
            text=obj["text"],
            source=obj["source"].strip(),
            published_at=published,
            url=optional["url"],
            author=optional["author"],
            lang=optional["lang"],
            entities=found[: min(self.max_entities, LIMITS.entities)],
        )
        too_long = post_limit_violation(post)
        if too_long is not None:
            return Rejection("field_too_long", too_long)
        return Decoded(post, cleaned)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_DEFAULT = PostDecoder()


def decode_post(raw: bytes | None, now: datetime | None = None) -> Decoded | Rejection:
    """Decode with the default limits (see :class:`PostDecoder`); never raises."""
    return _DEFAULT.decode(raw, now)
