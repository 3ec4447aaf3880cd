"""Per-post costs of the classify stage's data plane, old code path against new, in one run.

Three parts, each on real StockNet tweets (``../shared/data/stocknet_tweets``, as
``demo/replay.py`` maps them to posts):

* ``decode``: bytes → validated post (:meth:`PostDecoder.decode`) against the previous decoder
  (``json.loads`` + the field checks, the previous ``clean_text`` and ``post_limit_violation``),
  kept below as :class:`OldDecoder`. The results are checked equal post by post.
* ``to_json``: :meth:`ScoredPost.to_json` against the previous ``json.dumps`` of
  ``Post.to_dict()`` (``asdict``) and the scores; both are checked to read back the same.
* ``from_json``: :meth:`ScoredPost.from_json` (the aggregator's read of each scored record)
  against the previous read (``json.loads``, the same checks, the lone-surrogate check).
* ``send_all``: :func:`newswatch.io.produce.send_all` (batches, ``send_batch``) against the
  previous loop of one awaited ``producer.send`` per record (:func:`old_send_all`), on the
  embedded broker, with the scored records of those posts keyed by post id, ``--batch`` records
  a call, on a topic of ``--partitions`` partitions. Rounds alternate old and new.

µs/post is wall time over posts (the best of ``--repeat`` passes for decode and to_json; the
median round for send_all, which waits for the broker's acknowledgements). Prints one JSON line::

    python bench/hotpath.py [--posts 20000] [--batch 256] [--rounds 20] [--partitions 2]
                            [--max-batch-bytes 16384]
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import re
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from run_all import machine  # bench/ is no package: the script's folder is on sys.path

from newswatch.demo.broker import EmbeddedBroker
from newswatch.demo.replay import load_records
from newswatch.io.kafka import create_topics, make_producer
from newswatch.io.produce import RECORD_ERRORS, OutRecord, Refused, send_all
from newswatch.io.schemas import LIMITS, Post, ScoredPost, check_encodable, load_json
from newswatch.settings import KafkaSettings
from newswatch.stream.decode import Decoded, PostDecoder, Rejection
from newswatch.timeparse import parse_iso_or_none

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "stocknet_tweets"
DEFAULT_FILE = DATA / "stocknet_tweets_2014_2016.csv"


# ------------------------------------------------------------------------ the previous code path
# Verbatim copies of the code this change replaced (stream/decode.py, models/text.py,
# newswatch/io/schemas.py, newswatch/io/produce.py before the change): the "old" figures.
_URL = re.compile(r"https?://\S+")
_INVISIBLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff"
    "\ud800-\udfff\ue000-\uf8ff\U000f0000-\U0010ffff]"
)
_SPACE = re.compile(r"\s+")
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,5}(?:\.[A-Za-z]{1,2})?)(?![\w])")


def old_clean_text(text: str, max_length: int = 512, *, max_chars: int | None = None) -> str:
    limit = max_chars if max_chars is not None else max_length * 32
    text = html.unescape(text[: limit * 2])
    text = _INVISIBLE.sub(" ", text)
    text = _URL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()[:limit].rstrip()


def old_extract_entities(text: str, watchlist: Sequence[str] = ()) -> tuple[str, ...]:
    found = [f"${m.group(1).upper()}" for m in _CASHTAG.finditer(text)]
    if watchlist:
        lowered = text.casefold()
        for name in watchlist:
            if name and re.search(rf"(?<!\w){re.escape(name.casefold())}(?!\w)", lowered):
                found.append(name)
    return tuple(dict.fromkeys(found))


def old_post_limit_violation(post: Post) -> str | None:
    lim = LIMITS
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


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class OldDecoder:
    """``PostDecoder`` before the change (default limits)."""

    max_message_bytes = 1_048_576
    max_text_chars = 20_000
    watchlist: tuple[str, ...] = ()
    max_future_skew = timedelta(seconds=300)
    oldest = datetime(1990, 1, 1, tzinfo=UTC)
    max_entities = 32

    def decode(self, raw: bytes | None, now: datetime | None = None) -> Decoded | Rejection:
        try:
            return self._decode(raw, now or datetime.now(UTC))
        except Exception as exc:
            return Rejection("invalid_json", f"undecodable: {type(exc).__name__}: {exc}"[:300])

    def _decode(self, raw: bytes | None, now: datetime) -> Decoded | Rejection:
        if raw is None:
            return Rejection("invalid_json", "empty message (null value)")
        if len(raw) > self.max_message_bytes:
            return Rejection("too_large", f"{len(raw)} bytes > limit {self.max_message_bytes}")
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
        if not isinstance(post_id, str) or not post_id.strip() or len(post_id) > 256:
            return Rejection("bad_id", "'id' must be a non-empty string of at most 256 chars")
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
        cleaned = old_clean_text(obj["text"], max_chars=self.max_text_chars)
        if not cleaned:
            return Rejection("empty_text", "'text' is empty after removing control characters")
        entities = obj.get("entities")
        if entities is None:
            found = old_extract_entities(cleaned, self.watchlist)
        elif isinstance(entities, list) and all(isinstance(e, str) for e in entities):
            found = tuple(dict.fromkeys(e.strip()[:64] for e in entities if e.strip()))
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
        too_long = old_post_limit_violation(post)
        if too_long is not None:
            return Rejection("field_too_long", too_long)
        return Decoded(post, cleaned)


def old_to_json(sp: ScoredPost) -> bytes:
    """``ScoredPost.to_json`` before the change."""
    post = asdict(sp.post)
    post["published_at"] = sp.post.published_at.isoformat()
    post["entities"] = list(sp.post.entities)
    d = {
        **post,
        "topic": sp.topic,
        "topic_prob": sp.topic_prob,
        "sentiment": sp.sentiment,
        "sentiment_probs": sp.sentiment_probs,
        "score": sp.score,
        "model_version": sp.model_version,
        "record_ms": sp.record_ms,
        "scored_ms": sp.scored_ms,
        "inference_ms": sp.inference_ms,
    }
    return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()


def old_from_json(raw: bytes) -> ScoredPost:
    """``ScoredPost.from_json`` before the change: ``json.loads``, the same checks, then the
    lone-surrogate check."""
    scored = ScoredPost._from_dict(load_json(raw))
    check_encodable(raw, scored)
    return scored


async def old_send_all(producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> list[Refused]:
    """``send_all`` before the change: one awaited ``producer.send`` per record."""

    async def send(rec: OutRecord) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await producer.send(
            rec.topic, value=rec.value, key=rec.key, timestamp_ms=rec.timestamp_ms
        )
        return future

    sent: list[tuple[OutRecord, asyncio.Future[Any]]] = []
    refused: list[Refused] = []
    for rec in records:
        try:
            sent.append((rec, await send(rec)))
        except RECORD_ERRORS as exc:
            refused.append(Refused(rec, exc))
    results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True) if sent else []
    again: list[OutRecord] = []
    first_error: BaseException | None = None
    for (rec, _), result in zip(sent, results, strict=True):
        if isinstance(result, RECORD_ERRORS):
            again.append(rec)
        elif isinstance(result, BaseException) and first_error is None:
            first_error = result
    if first_error is not None:
        raise first_error
    for rec in again:
        try:
            await (await send(rec))
        except RECORD_ERRORS as exc:
            refused.append(Refused(rec, exc))
    return refused


# ----------------------------------------------------------------------------------- measuring
def _best_us(fn: Callable[[Any], object], items: Sequence[Any], repeat: int) -> float:
    """The best of ``repeat`` passes over ``items``, in µs per item."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - started)
    return best / len(items) * 1e6


def _part(old_us: float, new_us: float, **extra: Any) -> dict[str, Any]:
    return {
        "old_us_per_post": round(old_us, 3),
        "new_us_per_post": round(new_us, 3),
        "speedup": round(old_us / new_us, 2),
        **extra,
    }


def _scored(posts: list[Post]) -> list[ScoredPost]:
    """The records the classify stage writes for ``posts``, with fixed predictions."""
    probs = {"bearish": 0.07182817, "bullish": 0.8543, "neutral": 0.07387183}
    return [
        ScoredPost(post, "Stock Commentary", 0.913, "bullish", probs, 0.78, "bench", 1_700_000_000_000 + i,
                   1_700_000_000_250 + i, 3.25)
        for i, post in enumerate(posts)
    ]  # fmt: skip


async def _send_part(
    records: list[OutRecord], batch: int, rounds: int, partitions: int, max_batch_bytes: int | None
) -> dict[str, Any]:
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers, partitions=partitions, broker_compat="tansu"
        )
        run = uuid.uuid4().hex[:8]
        topics = {"old": f"hot-old-{run}", "new": f"hot-new-{run}"}
        await create_topics(kafka, list(topics.values()), partitions=partitions)
        options = {} if max_batch_bytes is None else {"max_batch_size": max_batch_bytes}
        producer = make_producer(kafka, **options)
        await producer.start()
        batch_bytes = getattr(getattr(producer, "_message_accumulator", None), "_batch_size", None)
        senders = {"old": old_send_all, "new": send_all}
        took: dict[str, list[float]] = {"old": [], "new": []}
        try:
            chunks = [records[i : i + batch] for i in range(0, len(records), batch)]
            for which in ("old", "new"):  # warm up: metadata, connections
                await senders[which](producer, [_on(r, topics[which]) for r in chunks[0]])
            for n in range(rounds):
                chunk = chunks[n % len(chunks)]
                for which in ("old", "new") if n % 2 == 0 else ("new", "old"):
                    out = [_on(r, topics[which]) for r in chunk]
                    started = time.perf_counter()
                    refused = await senders[which](producer, out)
                    took[which].append((time.perf_counter() - started) / len(out) * 1e6)
                    assert not refused, refused
        finally:
            await producer.stop()
    old, new = statistics.median(took["old"]), statistics.median(took["new"])
    return _part(
        old,
        new,
        records_per_call=batch,
        calls=rounds,
        partitions=partitions,
        max_batch_bytes=batch_bytes,
        record_bytes=round(statistics.mean(len(r.value) for r in records)),
        old_posts_per_s=round(1e6 / old),
        new_posts_per_s=round(1e6 / new),
    )


def _on(rec: OutRecord, topic: str) -> OutRecord:
    return OutRecord(topic, rec.value, rec.key, rec.timestamp_ms)


def _machine() -> str:
    m = machine()
    return f"{m['cpu']}, {m['cpu_count']} CPUs, load {m['load_avg_1m']:.2f}"


def main(args: argparse.Namespace) -> dict[str, Any]:
    loaded, _ = load_records(args.file, limit=args.posts)
    raws = [r.payload() for r in loaded]
    now = datetime.now(UTC)
    new_decoder, old_decoder = PostDecoder(), OldDecoder()
    new_results = [new_decoder.decode(r, now) for r in raws]
    same_decode = new_results == [old_decoder.decode(r, now) for r in raws]
    decode = _part(
        _best_us(lambda r: old_decoder.decode(r, now), raws, args.repeat),
        _best_us(lambda r: new_decoder.decode(r, now), raws, args.repeat),
        identical_results=same_decode,
        rejected=sum(isinstance(r, Rejection) for r in new_results),
        mean_bytes=round(statistics.mean(map(len, raws))),
    )
    posts = [r.post for r in new_results if isinstance(r, Decoded)]
    scored = _scored(posts)
    same_json = all(json.loads(s.to_json()) == json.loads(old_to_json(s)) for s in scored)
    same_bytes = sum(s.to_json() == old_to_json(s) for s in scored)
    to_json = _part(
        _best_us(old_to_json, scored, args.repeat),
        _best_us(ScoredPost.to_json, scored, args.repeat),
        same_values=same_json,
        same_bytes_share=round(same_bytes / len(scored), 4),
    )
    wire = [s.to_json() for s in scored]
    from_json = _part(
        _best_us(old_from_json, wire, args.repeat),
        _best_us(ScoredPost.from_json, wire, args.repeat),
        identical_results=[ScoredPost.from_json(w) for w in wire] == [old_from_json(w) for w in wire],
    )
    out_records = [
        OutRecord("-", s.to_json(), s.post.id.encode(), int(s.post.published_at.timestamp() * 1000))
        for s in scored
    ]
    sending = asyncio.run(
        _send_part(out_records, args.batch, args.rounds, args.partitions, args.max_batch_bytes)
    )
    return {
        "benchmark": "hotpath",
        "machine": _machine(),
        "file": str(args.file),
        "posts": len(raws),
        "decode": decode,
        "to_json": to_json,
        "from_json": from_json,
        "send_all": sending,
        # the classify stage's own per-post parts (from_json is the aggregator's)
        "total_old_us_per_post": round(
            decode["old_us_per_post"] + to_json["old_us_per_post"] + sending["old_us_per_post"], 2
        ),
        "total_new_us_per_post": round(
            decode["new_us_per_post"] + to_json["new_us_per_post"] + sending["new_us_per_post"], 2
        ),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="Replay file (CSV/JSONL) of posts.")
    p.add_argument("--posts", type=int, default=20_000, help="Posts read from the file.")
    p.add_argument("--repeat", type=int, default=5, help="Passes of decode and to_json (the best counts).")
    p.add_argument("--batch", type=int, default=256, help="Records per send_all call.")
    p.add_argument("--rounds", type=int, default=20, help="send_all calls per code path.")
    p.add_argument("--partitions", type=int, default=2, help="Partitions of the topics sent to.")
    p.add_argument(
        "--max-batch-bytes",
        type=int,
        default=None,
        help="The producer's max_batch_size, both paths (default: as make_producer leaves it, 256 KiB).",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(main(parse_args())))
