"""Pre-aggregated panes: one record per classify batch and input partition, merged by the aggregator.

The classify worker scores posts in batches. Instead of leaving the aggregator to add every post
to every window key one at a time, it also writes one :class:`PaneBatch` per batch and
posts-topic partition to the panes topic (``topics.panes``). A pane batch holds:

``rows``
    One compact row per scored post (:class:`Row`: its posts-topic offset, source, id, event
    time, score, whether it is bearish, topic, entities, and the example the windows keep: text
    cut to :data:`EXAMPLE_CHARS`, url). The aggregator still decides per row, in order, whether a
    post is a duplicate (its offset was merged before, or its source and id were seen) or late
    (behind the watermark), and moves the watermark: the event-time semantics are exactly those
    of one post at a time.
``panes``
    The partial sums of the batch per ``(kind, pane start, key)``: count, score sum, bearish
    count and the indexes of the rows that are its most negative examples. When every row of
    the batch is accepted (the usual case) the aggregator merges these, one update per key
    and pane instead of one per post and key; otherwise it adds the accepted rows one by one.

Idempotency. A pane batch names the posts-topic partition and the offset range
``[lo, hi]`` it covers (dead-lettered posts included, so the ranges of one partition are
contiguous). The aggregator remembers the merged ranges per partition with its window state
(same changelog, same flush), so a batch merged twice, or a replayed batch that overlaps one
merged before (a classify worker restarted before its commit re-reads its uncommitted
batches, with other boundaries), counts each offset once.

Every field is checked on the way in (:meth:`PaneBatch.from_json`): the panes topic is written
by newswatch, but a record that does not match the schema is dead-lettered, never a crash.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from newswatch.io.schemas import LIMITS, MAX_RECORD_BYTES, RecordError, ScoredPost
from newswatch.timeparse import epoch_ms

__all__ = [
    "EXAMPLES_PER_PANE",
    "EXAMPLE_CHARS",
    "GLOBAL_KEY",
    "KINDS",
    "PaneBatch",
    "PaneBuilder",
    "Partial",
    "Row",
    "example_of",
    "example_order",
    "keys_for",
    "merge_ranges",
    "row_of",
]

#: Most negative example posts kept per pane and window.
EXAMPLES_PER_PANE = 3
#: Example texts are cut to this many characters.
EXAMPLE_CHARS = 280
#: The key of the ``global`` kind.
GLOBAL_KEY = "all"
#: The window kinds, in the order a post's keys are listed.
KINDS = ("topic", "entity", "source", "global")
#: The version of the pane record format.
VERSION = 1
#: A pane record is cut into several (contiguous offset ranges) past this many bytes of rows.
CHUNK_BYTES = MAX_RECORD_BYTES // 4
#: Most rows one pane record may hold.
MAX_ROWS = 100_000


class Row(NamedTuple):
    """What the windows need of one scored post (the wire form is the same fields as a list)."""

    offset: int
    source: str
    id: str
    ts: int  # event time, epoch ms
    score: float
    negative: int  # 1 when bearish
    topic: str
    entities: list[str]
    text: str  # cut to the example length
    url: str | None


class Partial(NamedTuple):
    """The sums of one ``(kind, pane start, key)`` over the rows of a batch."""

    kind: str
    start: int
    key: str
    n: int
    s: float
    neg: int
    ex: list[int]  # row indexes of the most negative examples, best first


def keys_for(topic: str, entities: Iterable[str], source: str) -> list[tuple[str, str]]:
    """The (kind, key) pairs a post counts for: its topic, each entity once, its source, global.

    >>> keys_for("earnings", ["$A", "$B", "$A"], "wire")
    [('topic', 'earnings'), ('entity', '$A'), ('entity', '$B'), ('source', 'wire'), ('global', 'all')]
    """
    keys = [("topic", topic)]
    keys.extend(("entity", e) for e in dict.fromkeys(entities))
    keys.append(("source", source))
    keys.append(("global", GLOBAL_KEY))
    return keys


def row_of(sp: ScoredPost, offset: int = -1, text_chars: int = EXAMPLE_CHARS) -> Row:
    """The row of a scored post read at ``offset``."""
    post = sp.post
    return Row(
        offset,
        post.source,
        post.id,
        epoch_ms(post.published_at),
        float(sp.score),
        int(sp.sentiment == "bearish"),
        sp.topic,
        list(post.entities),
        post.text[:text_chars],
        post.url,
    )


def example_of(row: Row, text_chars: int = EXAMPLE_CHARS) -> list[Any]:
    """The example a pane keeps of a row: ``[score, id, text, url, entities]``."""
    return [row.score, row.id, row.text[:text_chars], row.url, row.entities]


def example_order(e: Sequence[Any]) -> tuple[float, str]:
    """Examples are ordered most negative first, then by post id."""
    return (e[0], e[1])


def merge_ranges(ranges: list[list[int]], lo: int, hi: int, limit: int = 64) -> list[list[int]]:
    """``ranges`` (sorted, disjoint ``[lo, hi]`` offset ranges) with ``[lo, hi]`` added and
    adjacent ranges joined. Past ``limit`` ranges the two oldest are joined (the gap between
    them is taken as merged: offsets that old are not replayed).

    >>> merge_ranges([[0, 9]], 10, 19)
    [[0, 19]]
    >>> merge_ranges([[0, 9]], 20, 29)
    [[0, 9], [20, 29]]
    >>> merge_ranges([[0, 9], [20, 29]], 5, 25)
    [[0, 29]]
    """
    out: list[list[int]] = []
    placed = False
    for a, b in ranges:
        if b + 1 < lo:
            out.append([a, b])
        elif hi + 1 < a:
            if not placed:
                out.append([lo, hi])
                placed = True
            out.append([a, b])
        else:
            lo, hi = min(lo, a), max(hi, b)
    if not placed:
        out.append([lo, hi])
        out.sort()
    while len(out) > limit:
        out[0:2] = [[out[0][0], out[1][1]]]
    return out


def covered(ranges: Sequence[Sequence[int]], offset: int) -> bool:
    """Whether ``offset`` lies in one of the sorted, disjoint ``ranges``.

    >>> covered([[0, 9], [20, 29]], 15), covered([[0, 9], [20, 29]], 20)
    (False, True)
    """
    i = bisect.bisect_right(ranges, offset, key=lambda r: r[0]) - 1
    return i >= 0 and ranges[i][0] <= offset <= ranges[i][1]


@dataclass(frozen=True, slots=True)
class PaneBatch:
    """The pre-aggregated panes of one batch of one posts-topic partition."""

    src: str  # the posts topic
    partition: int  # its partition
    lo: int  # first offset covered
    hi: int  # last offset covered
    pane_ms: int
    max_examples: int
    text_chars: int
    rows: list[Row]
    panes: list[Partial]

    @property
    def source_key(self) -> str:
        """Where the merged ranges of this batch's partition are kept (``off|topic|partition``)."""
        return f"off|{self.src}|{self.partition}"

    def to_json(self) -> bytes:
        """The wire form (rows and panes as lists)."""
        return orjson.dumps(
            {
                "v": VERSION,
                "src": self.src,
                "p": self.partition,
                "lo": self.lo,
                "hi": self.hi,
                "pane_ms": self.pane_ms,
                "ex": self.max_examples,
                "chars": self.text_chars,
                "rows": [tuple(r) for r in self.rows],
                "panes": [tuple(q) for q in self.panes],
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> PaneBatch:
        """Parse and check a pane record; :class:`RecordError` names what is wrong."""
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RecordError("invalid_json", f"not a pane record: {exc}"[:300]) from None
        if not isinstance(d, dict):
            raise RecordError("not_object", f"expected a JSON object, got {type(d).__name__}")
        for name in ("v", "src", "p", "lo", "hi", "pane_ms", "ex", "chars", "rows", "panes"):
            if d.get(name) is None:
                raise RecordError("missing_field", f"'{name}' is required")
        if d["v"] != VERSION:
            raise RecordError("invalid_value", f"pane record version {d['v']!r}, this worker reads {VERSION}")
        src, p, lo, hi = d["src"], d["p"], d["lo"], d["hi"]
        pane_ms, ex, chars = d["pane_ms"], d["ex"], d["chars"]
        if not (isinstance(src, str) and 0 < len(src) <= 249):
            raise RecordError("wrong_type", "'src' must be a topic name")
        if not all(_is_int(v) and v >= 0 for v in (p, lo, hi, ex, chars)) or lo > hi:
            raise RecordError("invalid_value", "'p', 'lo', 'hi', 'ex', 'chars' must be integers, lo <= hi")
        if not (_is_int(pane_ms) and pane_ms > 0) or ex > LIMITS.examples or chars > LIMITS.example_text:
            raise RecordError("invalid_value", "'pane_ms' must be positive; 'ex' and 'chars' within limits")
        raw_rows, raw_panes = d["rows"], d["panes"]
        if not isinstance(raw_rows, list) or not isinstance(raw_panes, list) or len(raw_rows) > MAX_ROWS:
            raise RecordError("wrong_type", f"'rows' and 'panes' must be lists (at most {MAX_ROWS} rows)")
        rows = [_row(r, lo, hi, chars) for r in raw_rows]
        for a, b in itertools.pairwise(rows):
            if b.offset <= a.offset:
                raise RecordError("invalid_value", "row offsets must increase")
        panes = [_partial(q, pane_ms, len(rows), ex) for q in raw_panes]
        total = sum(q.n for q in panes if q.kind == "global")
        if total != len(rows):
            raise RecordError("invalid_value", f"the global panes count {total} posts, the rows {len(rows)}")
        return cls(src, p, lo, hi, pane_ms, ex, chars, rows, panes)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _row(r: Any, lo: int, hi: int, chars: int) -> Row:
    """One row, checked against the schema and :data:`LIMITS`."""
    if not isinstance(r, list) or len(r) != 10:
        raise RecordError("wrong_type", "a row must be a list of 10 fields")
    offset, source, post_id, ts, score, negative, topic, entities, text, url = r
    lim = LIMITS
    if not (_is_int(offset) and lo <= offset <= hi):
        raise RecordError("invalid_value", f"row offset {offset!r} outside [{lo}, {hi}]")
    if not (isinstance(source, str) and 0 < len(source) <= lim.source):
        raise RecordError("wrong_type", "a row's source must be a string of 1 to 128 characters")
    if not (isinstance(post_id, str) and 0 < len(post_id) <= lim.id):
        raise RecordError("wrong_type", "a row's id must be a string of 1 to 256 characters")
    if not _is_int(ts):
        raise RecordError("wrong_type", "a row's event time must be an integer (epoch ms)")
    if not (_is_num(score) and -1.0 <= score <= 1.0) or negative not in (0, 1) or isinstance(negative, bool):
        raise RecordError("invalid_value", "a row needs -1 <= score <= 1 and negative 0 or 1")
    if not (isinstance(topic, str) and 0 < len(topic) <= lim.key):
        raise RecordError("wrong_type", "a row's topic must be a string of 1 to 256 characters")
    if not (
        isinstance(entities, list)
        and len(entities) <= lim.entities
        and all(isinstance(e, str) and 0 < len(e) <= lim.entity for e in entities)
    ):
        raise RecordError("wrong_type", "a row's entities must be at most 32 strings of 1 to 64 characters")
    if not (isinstance(text, str) and len(text) <= chars):
        raise RecordError("wrong_type", f"a row's text must be a string of at most {chars} characters")
    if url is not None and not (isinstance(url, str) and len(url) <= lim.url):
        raise RecordError("wrong_type", "a row's url must be null or a string of at most 2,048 characters")
    return Row(offset, source, post_id, ts, float(score), negative, topic, entities, text, url)


def _partial(q: Any, pane_ms: int, n_rows: int, max_examples: int) -> Partial:
    """One partial, checked for consistency with its batch."""
    if not isinstance(q, list) or len(q) != 7:
        raise RecordError("wrong_type", "a pane must be a list of 7 fields")
    kind, start, key, n, s, neg, ex = q
    if kind not in KINDS:
        raise RecordError("invalid_value", f"a pane's kind must be one of {', '.join(KINDS)}")
    if not (_is_int(start) and start % pane_ms == 0):
        raise RecordError("invalid_value", "a pane's start must be a multiple of pane_ms")
    if not (isinstance(key, str) and 0 < len(key) <= LIMITS.key):
        raise RecordError("wrong_type", "a pane's key must be a string of 1 to 256 characters")
    if not (_is_int(n) and 1 <= n <= n_rows and _is_int(neg) and 0 <= neg <= n):
        raise RecordError("invalid_value", "a pane needs 1 <= n <= rows and 0 <= neg <= n")
    if not (_is_num(s) and abs(s) <= n + 1e-6):
        raise RecordError("invalid_value", "a pane's score sum must lie within [-n, n]")
    if not (
        isinstance(ex, list)
        and len(ex) <= min(n, max_examples)
        and all(_is_int(i) and 0 <= i < n_rows for i in ex)
    ):
        raise RecordError("invalid_value", "a pane's examples must be row indexes")
    return Partial(kind, start, key, n, float(s), neg, ex)


class PaneBuilder:
    """Builds the pane records of one batch of scored posts (in the classify worker).

    Parameters
    ----------
    pane_ms
        The aggregator's pane size (the gcd of its window shapes, see
        :func:`newswatch.stream.aggregate.stage.window_specs`).
    max_examples, text_chars
        As the aggregator keeps them.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> from newswatch.io.schemas import Post, ScoredPost
    >>> def sp(i, score):
    ...     post = Post(str(i), "t", "wire", datetime.fromtimestamp(i, timezone.utc), entities=("$X",))
    ...     return ScoredPost(post, "earnings", 0.9, "bearish", {}, score, "v1", 0, 0, 0.0)
    >>> [batch] = PaneBuilder(60_000).build("posts", 0, 10, 12, [(10, sp(1, -0.5)), (12, sp(2, -0.7))])
    >>> (batch.lo, batch.hi, len(batch.rows))
    (10, 12, 2)
    >>> [(q.kind, q.key, q.n, q.neg, q.ex) for q in batch.panes if q.kind == "entity"]
    [('entity', '$X', 2, 2, [1, 0])]
    """

    def __init__(
        self, pane_ms: int, max_examples: int = EXAMPLES_PER_PANE, text_chars: int = EXAMPLE_CHARS
    ) -> None:
        self.pane_ms = pane_ms
        self.max_examples = max_examples
        self.text_chars = text_chars

    def build(
        self, src: str, partition: int, lo: int, hi: int, posts: Sequence[tuple[int, ScoredPost]]
    ) -> list[PaneBatch]:
        """The pane batches covering offsets ``[lo, hi]`` of ``src``/``partition``.

        ``posts`` are the scored posts of that range as (offset, post), in offset order; the
        offsets in between (dead-lettered posts) are covered too. Usually one batch; rows past
        :data:`CHUNK_BYTES` start another (the ranges stay contiguous).
        """
        out: list[PaneBatch] = []
        rows: list[Row] = []
        size = 0
        first = lo
        for offset, sp in posts:
            row = row_of(sp, offset, self.text_chars)
            rows.append(row)
            size += 96 + len(row.text) * 2 + len(row.url or "") + len(row.id) + 70 * len(row.entities)
            if size >= CHUNK_BYTES and offset < hi:
                out.append(self._batch(src, partition, first, offset, rows))
                rows, size, first = [], 0, offset + 1
        out.append(self._batch(src, partition, first, hi, rows))
        return out

    def _batch(self, src: str, partition: int, lo: int, hi: int, rows: list[Row]) -> PaneBatch:
        pane_ms, k = self.pane_ms, self.max_examples
        sums: dict[tuple[str, int, str], list[Any]] = {}
        for i, row in enumerate(rows):
            start = (row.ts // pane_ms) * pane_ms
            order = (row.score, row.id)
            for kind, key in keys_for(row.topic, row.entities, row.source):
                acc = sums.get((kind, start, key))
                if acc is None:
                    sums[(kind, start, key)] = [1, row.score, row.negative, [(order, i)]]
                    continue
                acc[0] += 1
                acc[1] += row.score
                acc[2] += row.negative
                best = acc[3]
                if len(best) < k or order < best[-1][0]:
                    bisect.insort_right(best, (order, i), key=lambda t: t[0])
                    del best[k:]
        panes = [
            Partial(kind, start, key, n, s, neg, [i for _, i in best])
            for (kind, start, key), (n, s, neg, best) in sums.items()
        ]
        return PaneBatch(src, partition, lo, hi, pane_ms, k, self.text_chars, rows, panes)
