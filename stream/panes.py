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
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

import msgspec

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


Kind = Literal["topic", "entity", "source", "global"]


class Row(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """What the windows need of one scored post (on the wire: the fields as a list)."""

    offset: Annotated[int, msgspec.Meta(ge=0)]
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS.source)]
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS.id)]
    ts: int  # event time, epoch ms
    score: Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)]
    negative: Annotated[int, msgspec.Meta(ge=0, le=1)]  # 1 when bearish
    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS.key)]
    entities: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS.entity)]],
        msgspec.Meta(max_length=LIMITS.entities),
    ]
    text: Annotated[str, msgspec.Meta(max_length=LIMITS.example_text)]  # cut to the example length
    url: Annotated[str, msgspec.Meta(max_length=LIMITS.url)] | None


class Partial(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The sums of one ``(kind, pane start, key)`` over the rows of a batch."""

    kind: Kind
    start: int
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS.key)]
    n: Annotated[int, msgspec.Meta(ge=1)]
    s: float
    neg: Annotated[int, msgspec.Meta(ge=0)]
    ex: Annotated[list[Annotated[int, msgspec.Meta(ge=0)]], msgspec.Meta(max_length=LIMITS.examples)]


def keys_for(topic: str, entities: Iterable[str], source: str) -> list[tuple[Kind, str]]:
    """The (kind, key) pairs a post counts for: its topic, each entity once, its source, global.

    >>> keys_for("earnings", ["$A", "$B", "$A"], "wire")
    [('topic', 'earnings'), ('entity', '$A'), ('entity', '$B'), ('source', 'wire'), ('global', 'all')]
    """
    keys: list[tuple[Kind, str]] = [("topic", topic)]
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


def _first(t: tuple[Any, ...]) -> Any:
    return t[0]


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


class PaneBatch(
    msgspec.Struct, frozen=True, rename={"partition": "p", "max_examples": "ex", "text_chars": "chars"}
):
    """The pre-aggregated panes of one batch of one posts-topic partition."""

    v: int
    src: Annotated[str, msgspec.Meta(min_length=1, max_length=249)]  # the posts topic
    partition: Annotated[int, msgspec.Meta(ge=0)]  # its partition
    lo: Annotated[int, msgspec.Meta(ge=0)]  # first offset covered
    hi: Annotated[int, msgspec.Meta(ge=0)]  # last offset covered
    pane_ms: Annotated[int, msgspec.Meta(gt=0)]
    max_examples: Annotated[int, msgspec.Meta(ge=0, le=LIMITS.examples)]
    text_chars: Annotated[int, msgspec.Meta(ge=0, le=LIMITS.example_text)]
    rows: Annotated[list[Row], msgspec.Meta(max_length=MAX_ROWS)]
    panes: list[Partial]

    @property
    def source_key(self) -> str:
        """Where the merged ranges of this batch's partition are kept (``off|topic|partition``)."""
        return f"off|{self.src}|{self.partition}"

    @property
    def complete(self) -> bool:
        """Whether the partial sums count every row (a batch whose rows were filtered has none)."""
        return sum(q.n for q in self.panes if q.kind == "global") == len(self.rows)

    def to_json(self) -> bytes:
        """The wire form (rows and panes as lists)."""
        return _ENCODER.encode(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> PaneBatch:
        """Parse and check a pane record; :class:`RecordError` names what is wrong.

        The schema (types, ranges, lengths: :data:`LIMITS`) is checked while decoding; then the
        batch's own consistency: rows inside ``[lo, hi]`` in increasing offset order, panes on
        pane boundaries whose counts, sums and examples fit their rows, and the global panes
        counting every row.
        """
        try:
            batch = _DECODER.decode(raw)
        except msgspec.ValidationError as exc:
            raise RecordError(_reason(str(exc)), f"pane record: {exc}"[:300]) from None
        except msgspec.DecodeError as exc:
            raise RecordError("invalid_json", f"not a pane record: {exc}"[:300]) from None
        batch.check()
        return batch

    def check(self) -> None:
        """:class:`RecordError` when the batch does not fit together (see :meth:`from_json`)."""
        if self.v != VERSION:
            raise RecordError("invalid_value", f"pane record version {self.v!r}, this worker reads {VERSION}")
        lo, hi, rows = self.lo, self.hi, self.rows
        if lo > hi:
            raise RecordError("invalid_value", f"'lo' {lo} is after 'hi' {hi}")
        if rows:
            offsets = [r.offset for r in rows]
            if offsets[0] < lo or offsets[-1] > hi or any(a >= b for a, b in itertools.pairwise(offsets)):
                raise RecordError("invalid_value", f"row offsets must increase within [{lo}, {hi}]")
        n_rows, pane_ms = len(rows), self.pane_ms
        for q in self.panes:
            if q.start % pane_ms or q.n > n_rows or q.neg > q.n or not abs(q.s) <= q.n + 1e-6:
                raise RecordError("invalid_value", f"pane {q.kind}:{q.key}@{q.start} does not fit its batch")
            if len(q.ex) > min(q.n, self.max_examples) or any(i >= n_rows for i in q.ex):
                raise RecordError(
                    "invalid_value", f"pane {q.kind}:{q.key}@{q.start}: examples are not its rows"
                )
        if not self.complete:
            total = sum(q.n for q in self.panes if q.kind == "global")
            raise RecordError("invalid_value", f"the global panes count {total} posts, the rows {n_rows}")


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(PaneBatch)


def _reason(message: str) -> str:
    """The dead-letter reason of a schema error msgspec reported."""
    if message.startswith("Object missing required field"):
        return "missing_field"
    if message.startswith("Expected `object`, got") and " - at " not in message:
        return "not_object"
    if " of length " in message:
        return "field_too_long"
    if ", got `" in message:
        return "wrong_type"
    return "invalid_value"


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
        sums: dict[tuple[Kind, int, str], list[Any]] = {}
        get = sums.get
        for i, row in enumerate(rows):
            ts, score, negative = row.ts, row.score, row.negative
            start = ts - ts % pane_ms
            order = (score, row.id)
            for kind, key in keys_for(row.topic, row.entities, row.source):
                ident = (kind, start, key)
                acc = get(ident)
                if acc is None:
                    sums[ident] = [1, score, negative, [(order, i)]]
                    continue
                acc[0] += 1
                acc[1] += score
                acc[2] += negative
                best = acc[3]
                if len(best) < k or order < best[-1][0]:
                    bisect.insort_right(best, (order, i), key=_first)
                    del best[k:]
        panes = [
            Partial(kind, start, key, n, s, neg, [i for _, i in best])
            for (kind, start, key), (n, s, neg, best) in sums.items()
        ]
        return PaneBatch(VERSION, src, partition, lo, hi, pane_ms, k, self.text_chars, rows, panes)
