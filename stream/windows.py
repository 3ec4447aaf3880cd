"""Event-time windows over scored posts: the aggregation logic, free of faust.

Windows are named by shape: ``tumbling_<duration_ms>`` and
``hopping_<duration_ms>_<step_ms>``. State is kept in *panes*: tumbling buckets
of ``pane_ms`` (the gcd of every duration and step), one per (kind, key, pane), so
an event touches one pane per key however many windows contain it; a window is
the sum of its panes. The state lives in three mutable mappings that the
aggregator backs with changelogged faust tables (plain dicts in unit tests):

``panes``
    ``"kind|pane_start|key"`` -> ``{"n", "s", "neg", "late", "ex"}`` (count,
    score sum, bearish count, late count, the most negative examples).
``seen``
    ``"ids|pane_start|n"`` -> the dedupe keys (source and post id, :func:`dedupe_key`) of the
    posts of that pane first seen between two state flushes: dedupe within the lateness
    horizon, written as one entry per pane and flush (:meth:`WindowEngine.checkpoint`), not one
    per post. Ids are unique per source only: the same id from two sources is two posts.
    (State written by earlier versions holds one entry per post, dedupe key -> event time;
    it is read as well and ages out the same way.)
``meta``
    ``"wm"`` -> watermark (see Semantics: the smallest per-partition largest event time over
    the partitions that are not idle, never moving backwards), written with every state flush
    (:meth:`WindowEngine.checkpoint`); ``"final:<window>"`` -> the largest window
    end whose final record was emitted.

Semantics
---------
* Event time is ``published_at``. The largest event time of each *feed* (a source on an
  input partition) is tracked; the watermark is the smallest of them over the feeds that
  are not idle, never moving backwards. A partition read behind the others (a backlog
  being caught up) holds it back, and so does a feed behind the others, while a feed
  ahead of them (a clock minutes fast, a few posts stamped in the future) moves nothing:
  one fast feed cannot make the others' posts late. A feed or partition that delivered
  nothing for ``idle_ms`` (wall clock) stops holding it back; a partition that has not
  delivered yet since assignment holds it until then. At most ``max_feeds`` feeds are
  tracked (the least recently active are forgotten).
* An event with ``ts < watermark - grace_ms`` is *late*: it is added to no window,
  counted (``late`` of its pane if that is still kept, and the caller's metric).
* A window ``[start, end)`` is final once ``end + grace_ms <= watermark``; no
  on-time event can reach it after that, so its final record never changes.
* A post (source and id) already seen within the horizon is a duplicate and ignored.
"""

from __future__ import annotations

import bisect
import functools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast

from newswatch.io.schemas import ScoredPost, WindowKind, WindowStat
from newswatch.settings.stream import AggregateSettings, window_name
from newswatch.stream.panes import (
    EXAMPLE_CHARS,
    EXAMPLES_PER_PANE,
    GLOBAL_KEY,
    PaneBatch,
    Row,
    covered,
    example_of,
    example_order,
    keys_for,
    merge_ranges,
    row_of,
)

__all__ = [
    "GLOBAL_KEY",
    "BatchOutcome",
    "Outcome",
    "WindowEngine",
    "WindowSpec",
    "dedupe_key",
    "pane_size",
    "window_specs",
]

Outcome = Literal["added", "duplicate", "late"]
_SEP = "|"


class BatchOutcome(NamedTuple):
    """How many posts of a pane batch were added, duplicates and late."""

    added: int
    duplicate: int
    late: int


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A window shape: tumbling when ``step_ms == duration_ms``, else hopping.

    >>> WindowSpec.hopping(300_000, 60_000).name
    'hopping_300000_60000'
    >>> list(WindowSpec.hopping(300, 100).starts_containing(250))
    [0, 100, 200]
    """

    duration_ms: int
    step_ms: int

    def __post_init__(self) -> None:
        if self.duration_ms <= 0 or self.step_ms <= 0 or self.step_ms > self.duration_ms:
            raise ValueError(f"need 0 < step_ms <= duration_ms, got {self.duration_ms}/{self.step_ms}")

    @classmethod
    def tumbling(cls, duration_ms: int) -> WindowSpec:
        """Back-to-back windows of ``duration_ms``."""
        return cls(duration_ms, duration_ms)

    @classmethod
    def hopping(cls, duration_ms: int, step_ms: int) -> WindowSpec:
        """Windows of ``duration_ms`` starting every ``step_ms``."""
        return cls(duration_ms, step_ms)

    @property
    def name(self) -> str:
        """``tumbling_<d>`` or ``hopping_<d>_<s>``: window label and table-name suffix."""
        return _spec_name(self.duration_ms, self.step_ms)

    def starts_containing(self, ts: int) -> range:
        """Starts of every window that contains ``ts``, oldest first."""
        last = (ts // self.step_ms) * self.step_ms
        first = ((ts - self.duration_ms) // self.step_ms + 1) * self.step_ms  # first start > ts - duration
        return range(first, last + 1, self.step_ms)

    def last_end_at_or_before(self, t: int) -> int:
        """The largest window end ``<= t``."""
        return ((t - self.duration_ms) // self.step_ms) * self.step_ms + self.duration_ms


def window_specs(agg: AggregateSettings) -> list[WindowSpec]:
    """The window shapes configured in ``agg``: the tumbling bucket, then each hopping window."""
    specs = [WindowSpec.tumbling(agg.tumbling_ms)]
    specs.extend(WindowSpec.hopping(d, s) for d, s in agg.hopping)
    return list(dict.fromkeys(specs))


def pane_size(specs: Sequence[WindowSpec]) -> int:
    """The pane every window of ``specs`` is a whole number of: the gcd of durations and steps.

    >>> pane_size([WindowSpec.tumbling(60_000), WindowSpec.hopping(300_000, 60_000)])
    60000
    """
    return math.gcd(*(v for s in specs for v in (s.duration_ms, s.step_ms)))


@functools.lru_cache(maxsize=64)
def _spec_name(duration_ms: int, step_ms: int) -> str:
    return window_name(duration_ms, step_ms)  # the names settings validate alerts.windows against


def dedupe_key(sp: ScoredPost) -> str:
    """What makes a post unique: its source and its id (ids are unique per source only).

    >>> from datetime import datetime, timezone
    >>> from newswatch.io.schemas import Post, ScoredPost
    >>> def sp(source):
    ...     post = Post("1", "t", source, datetime(2026, 1, 1, tzinfo=timezone.utc))
    ...     return ScoredPost(post, "earnings", 0.9, "neutral", {}, 0.0, "v1", 0, 0, 0.0)
    >>> dedupe_key(sp("wire")) == dedupe_key(sp("blog"))
    False
    """
    return _dedupe_key(sp.post.source, sp.post.id)


def _dedupe_key(source: str, post_id: str) -> str:
    return f"{len(source)}:{source}:{post_id}"


def _pane_key(kind: str, start: int, key: str) -> str:
    return f"{kind}{_SEP}{start}{_SEP}{key}"


def _split_pane_key(k: str) -> tuple[str, int, str]:
    kind, start, key = k.split(_SEP, 2)
    return kind, int(start), key


class WindowEngine:
    """Aggregates scored posts into windows and says which records to emit.

    Parameters
    ----------
    specs
        The window shapes (at least one).
    grace_ms
        Allowed lateness behind the watermark.
    panes, seen, meta
        State mappings (see the module docstring); faust tables in the aggregator.
    max_examples
        Most negative example posts kept per window.
    text_chars
        Example texts are cut to this many characters.
    idle_ms
        A partition or feed silent this long no longer holds the watermark back.
    updates_per_step
        In-progress updates of a window shape are collected at most this many times per step of
        the shape (0: at every :meth:`collect`); finals are collected as soon as a window closes.
    max_feeds
        Most feeds (source on a partition) whose event times are tracked.
    clock
        Wall clock in seconds (monotonic), injectable for tests.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> from newswatch.io.schemas import Post, ScoredPost
    >>> def sp(i, sec, score):
    ...     post = Post(str(i), "t", "wire", datetime.fromtimestamp(sec, timezone.utc), entities=("$X",))
    ...     return ScoredPost(post, "earnings", 0.9, "bearish" if score < 0 else "bullish",
    ...                       {}, score, "v1", 0, 0, 0.0)
    >>> eng = WindowEngine([WindowSpec.tumbling(10_000)], 0, panes={}, seen={}, meta={})
    >>> [eng.add(p) for p in (sp(1, 1, -0.5), sp(1, 1, -0.5), sp(2, 12, 0.5))]
    ['added', 'duplicate', 'added']
    >>> finals = [w for w in eng.collect() if w.final and w.kind == "entity"]
    >>> [(w.start_ms, w.count, w.negative_share) for w in finals]
    [(0, 1, 1.0)]
    """

    def __init__(
        self,
        specs: Sequence[WindowSpec],
        grace_ms: int,
        *,
        panes: MutableMapping[str, Any],
        seen: MutableMapping[str, Any],
        meta: MutableMapping[str, Any],
        max_examples: int = EXAMPLES_PER_PANE,
        text_chars: int = EXAMPLE_CHARS,
        idle_ms: int = 5_000,
        updates_per_step: int = 0,
        max_feeds: int = 1_024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not specs:
            raise ValueError("at least one window spec is needed")
        self.specs = tuple(specs)
        self.grace_ms = grace_ms
        self.pane_ms = pane_size(self.specs)
        self.max_duration_ms = max(s.duration_ms for s in self.specs)
        self.panes = panes
        self.seen = seen
        self.meta = meta
        self.max_examples = max_examples
        self.text_chars = text_chars
        self._by_pane: dict[int, set[tuple[str, str]]] = {}
        self._by_key: dict[tuple[str, str], list[int]] = {}
        self._ids: set[str] = set()  # dedupe keys of the posts seen within the horizon
        self._seen_by_pane: dict[int, list[str]] = {}
        self._new_ids: dict[int, list[str]] = {}  # seen since the last checkpoint, by pane
        self._id_entries: dict[int, list[str]] = {}  # the ``seen`` entries holding each pane's ids
        self._dirty: set[tuple[str, str, int]] = set()
        self._pending_final: dict[str, int] = {}
        self._wm: int | None = None
        self._indexed = False
        self.idle_ms = idle_ms
        # In-progress updates of a shape at most every step / updates_per_step (0: every collect).
        self._update_every_s = {
            s.name: (s.step_ms / updates_per_step / 1000.0 if updates_per_step else 0.0) for s in self.specs
        }
        self._next_update: dict[str, float] = {}
        self._pending_updates: dict[str, set[tuple[str, str, int]]] = {s.name: set() for s in self.specs}
        self._clock = clock
        self._assigned: set[int] | None = None
        self._part_max: dict[int, int] = {}
        self._part_seen: dict[int, float] = {}
        self.max_feeds = max_feeds
        # per feed (partition, source): largest event time and when it last delivered (LRU order)
        self._feed_max: OrderedDict[tuple[int, str], int] = OrderedDict()
        self._feed_seen: dict[tuple[int, str], float] = {}
        self._argmin: tuple[int, str] | None = None
        self._advanced_at = -math.inf

    # -- state ---------------------------------------------------------------------------------

    @property
    def watermark(self) -> int | None:
        """The event-time watermark (ms), or ``None`` before it was first set.

        The largest event time of each feed (a source on an input partition) is tracked; the
        watermark is the smallest of them over the feeds that are not idle (the largest when
        every feed is idle), and it never moves backwards. It is not the largest event time
        seen: a partition or feed behind the others holds it back, one ahead moves nothing.
        """
        self._ensure_index()
        return self._wm

    def _ensure_index(self) -> None:
        """Build the in-memory indexes from the (possibly recovered) state, once."""
        if self._indexed:
            return
        self._indexed = True
        wm = self.meta.get("wm")
        self._wm = int(wm) if wm is not None else None
        for k in list(self.panes.keys()):
            kind, start, key = _split_pane_key(k)
            self._by_pane.setdefault(start, set()).add((kind, key))
            self._by_key.setdefault((kind, key), []).append(start)
        for starts in self._by_key.values():
            starts.sort()
        for entry, value in list(self.seen.items()):
            if entry.startswith("ids|"):
                pane, ids = int(entry.split("|", 2)[1]), list(value)
            else:  # one post per entry (written by earlier versions): dedupe key -> event time
                pane, ids = self._pane_of(int(value)), [entry]
            self._ids.update(ids)
            self._seen_by_pane.setdefault(pane, []).extend(ids)
            self._id_entries.setdefault(pane, []).append(entry)

    def assign(self, partitions: Iterable[int]) -> None:
        """The input partitions this worker reads now: each holds the watermark back until it
        delivers or stays silent for ``idle_ms``."""
        now = self._clock()
        self._assigned = set(partitions)
        self._part_max = {p: t for p, t in self._part_max.items() if p in self._assigned}
        self._part_seen = {p: now for p in self._assigned}
        for feed in [f for f in self._feed_max if f[0] not in self._assigned]:
            del self._feed_max[feed]
            self._feed_seen.pop(feed, None)
        self._argmin = None

    def _advance(self, feed: tuple[int, str] | None = None) -> None:
        """Move the watermark: the smallest feed max event time over feeds that are not idle,
        never backwards. ``feed`` is the feed that just delivered.

        The minimum can only rise when the feed holding it delivers or when feeds fall idle,
        so it is recomputed then (the latter checked every tenth of ``idle_ms``), not per post.
        """
        now = self._clock()
        recent = now - self._advanced_at < self.idle_ms / 10_000.0
        if feed is not None and self._argmin is not None and feed != self._argmin and recent:
            return
        self._advanced_at = now
        idle_s = self.idle_ms / 1000.0
        parts = self._assigned if self._assigned is not None else set(self._part_max)
        holding_parts = {p for p in parts if now - self._part_seen.get(p, now) < idle_s}
        if any(p not in self._part_max for p in holding_parts):
            return  # a partition that has not delivered yet may still hold older events
        holding = [f for f in self._feed_max if f[0] in holding_parts and now - self._feed_seen[f] < idle_s]
        if holding:
            self._argmin = min(holding, key=self._feed_max.__getitem__)
            candidate = self._feed_max[self._argmin]
        elif self._feed_max:
            self._argmin = None
            candidate = max(self._feed_max.values())
        else:
            return
        if self._wm is None or candidate > self._wm:
            self._wm = candidate

    def _delivered(self, partition: int, source: str, ts: int) -> tuple[int, str]:
        """Record that feed (partition, source) delivered an event at ``ts``."""
        feed = (partition, source)
        if feed in self._feed_max:
            self._feed_max.move_to_end(feed)
            if ts > self._feed_max[feed]:
                self._feed_max[feed] = ts
        else:
            self._feed_max[feed] = ts
            self._argmin = None  # a new feed may hold the minimum now: recompute
            if len(self._feed_max) > self.max_feeds:
                gone, _ = self._feed_max.popitem(last=False)
                self._feed_seen.pop(gone, None)
                if gone == self._argmin:
                    self._argmin = None
        self._feed_seen[feed] = self._clock()
        return feed

    def reset_index(self) -> None:
        """Forget the in-memory indexes (after a rebalance refilled the tables); call it after
        :meth:`checkpoint` (the ids seen since are written then).

        The windows changed since the last :meth:`collect` stay to be emitted: posts handled
        before a rebalance completed (faust can hand them over first) must still reach the
        windows topic; each is read again from the refilled tables.
        """
        self._indexed = False
        self._by_pane.clear()
        self._by_key.clear()
        self._ids.clear()
        self._seen_by_pane.clear()
        self._new_ids.clear()
        self._id_entries.clear()
        self._pending_final.clear()

    def _pane_of(self, ts: int) -> int:
        return (ts // self.pane_ms) * self.pane_ms

    # -- input ---------------------------------------------------------------------------------

    def add(self, sp: ScoredPost, partition: int = 0) -> Outcome:
        """Aggregate one scored post read from input ``partition``: added, duplicate or late."""
        self._ensure_index()
        return self._add_row(row_of(sp, text_chars=self.text_chars), partition)

    def _add_row(self, row: Row, partition: int) -> Outcome:
        """One post, in input order: the per-post path (see :meth:`add_batch` for the batch one)."""
        outcome = self._admit(row, partition)
        if outcome == "added":
            self._add_to_panes(row)
        elif outcome == "late":
            self._count_late(row)
        return outcome

    def _admit(self, row: Row, partition: int) -> Outcome:
        """Decide one post (duplicate, late or added) and, when added, remember it and move the
        watermark; the panes are not touched."""
        self._part_seen[partition] = self._clock()
        seen_key = _dedupe_key(row.source, row.id)
        if seen_key in self._ids:
            return "duplicate"
        ts = row.ts
        if self._wm is not None and ts < self._wm - self.grace_ms:
            return "late"
        pane = self._pane_of(ts)
        self._ids.add(seen_key)
        self._seen_by_pane.setdefault(pane, []).append(seen_key)
        self._new_ids.setdefault(pane, []).append(seen_key)
        if ts > self._part_max.get(partition, ts - 1):
            self._part_max[partition] = ts
        self._advance(self._delivered(partition, row.source, ts))
        return "added"

    def _count_late(self, row: Row) -> None:
        """A late post raises ``late`` of the panes it would have counted in, where they are kept."""
        pane = self._pane_of(row.ts)
        for kind, key in keys_for(row.topic, row.entities, row.source):
            pk = _pane_key(kind, pane, key)
            state = self.panes.get(pk)
            if state is not None:
                self.panes[pk] = {**state, "late": int(state["late"]) + 1}
                self._dirty.add((kind, key, pane))

    def _add_to_panes(self, row: Row) -> None:
        pane = self._pane_of(row.ts)
        example = example_of(row, self.text_chars)
        for kind, key in keys_for(row.topic, row.entities, row.source):
            self._merge(kind, pane, key, 1, row.score, row.negative, (example,))

    def _merge(
        self, kind: str, pane: int, key: str, n: int, total: float, neg: int, examples: Sequence[list[Any]]
    ) -> None:
        """Add counts and examples to one pane (creating it)."""
        pk = _pane_key(kind, pane, key)
        state = self.panes.get(pk)
        if state is None:
            state = {"n": 0, "s": 0.0, "neg": 0, "late": 0, "ex": []}
            self._by_pane.setdefault(pane, set()).add((kind, key))
            bisect.insort(self._by_key.setdefault((kind, key), []), pane)
        self.panes[pk] = {
            "n": int(state["n"]) + n,
            "s": float(state["s"]) + total,
            "neg": int(state["neg"]) + neg,
            "late": int(state["late"]),
            "ex": sorted([*state["ex"], *examples], key=example_order)[: self.max_examples],
        }
        self._dirty.add((kind, key, pane))

    def add_batch(self, batch: PaneBatch, partition: int = 0) -> BatchOutcome:
        """Merge one pane batch read from input ``partition``; returns how many of its posts were
        added, duplicates and late.

        Each row is decided in order exactly as :meth:`add` decides a post (offsets merged
        before and seen posts are duplicates; the watermark moves row by row). When every row
        is added and the batch was built with this engine's pane size and example settings,
        its partial sums are merged (one update per key and pane); otherwise the rows are
        added one by one. The covered offset range is remembered in ``meta`` with the state.
        """
        self._ensure_index()
        merged_key = batch.source_key
        ranges: list[list[int]] = self.meta.get(merged_key) or []
        outcomes: list[Outcome] = []
        for row in batch.rows:
            if ranges and covered(ranges, row.offset):
                outcomes.append("duplicate")
            else:
                outcomes.append(self._admit(row, partition))
        self._part_seen[partition] = self._clock()
        added = outcomes.count("added")
        fits = (
            batch.pane_ms == self.pane_ms
            and batch.max_examples == self.max_examples
            and batch.text_chars <= self.text_chars
        )
        if added == len(batch.rows) and fits and batch.complete:
            rows = batch.rows
            for q in batch.panes:
                examples = [example_of(rows[i], self.text_chars) for i in q.ex]
                self._merge(q.kind, q.start, q.key, q.n, q.s, q.neg, examples)
        else:
            for row, outcome in zip(batch.rows, outcomes, strict=True):
                if outcome == "added":
                    self._add_to_panes(row)
                elif outcome == "late":
                    self._count_late(row)
        updated = merge_ranges(ranges, batch.lo, batch.hi)
        if updated != ranges:
            self.meta[merged_key] = updated
        return BatchOutcome(added, outcomes.count("duplicate"), outcomes.count("late"))

    # -- output --------------------------------------------------------------------------------

    def collect(self, *, all_updates: bool = False) -> list[WindowStat]:
        """Records to emit now: finals of windows the watermark closed, then updates.

        Updates are the newest window of each shape containing a changed pane, for every
        key that changed since the shape's last updates (coalesced; at most ``updates_per_step``
        times per step of the shape; every pending one with ``all_updates``, before a stop).
        Call :meth:`commit` once the records are safely written, so finals are not emitted twice.
        """
        self._ensure_index()
        self._advance()
        out: list[WindowStat] = []
        wm = self._wm
        if wm is None:
            return out
        emitted: set[tuple[str, str, str, int]] = set()
        horizon = wm - self.grace_ms
        for spec in self.specs:
            hi = spec.last_end_at_or_before(horizon)
            lo_raw = self.meta.get(f"final:{spec.name}")
            lo = int(lo_raw) if lo_raw is not None else None
            if lo is not None and hi <= lo:
                continue
            for kind, key, start in self._windows_ending_in(spec, lo, hi):
                stat = self._window(spec, kind, key, start, final=True)
                if stat is not None:
                    out.append(stat)
                    emitted.add((kind, key, spec.name, start))
            self._pending_final[spec.name] = hi
        now = self._clock()
        due = [s for s in self.specs if all_updates or now >= self._next_update.get(s.name, -math.inf)]
        for spec in self.specs:
            self._pending_updates[spec.name] |= self._dirty
        changed = sorted(set().union(*(self._pending_updates[s.name] for s in due)))
        for kind, key, pane in changed:
            for spec in due:
                if (kind, key, pane) not in self._pending_updates[spec.name]:
                    continue
                start = (pane // spec.step_ms) * spec.step_ms
                ident = (kind, key, spec.name, start)
                if ident in emitted:
                    continue
                emitted.add(ident)
                closed = start + spec.duration_ms + self.grace_ms <= wm
                lo_raw = self.meta.get(f"final:{spec.name}")
                if closed and lo_raw is not None and start + spec.duration_ms <= int(lo_raw):
                    # already final: a late event only raised ``late``; re-emit the final record
                    stat = self._window(spec, kind, key, start, final=True)
                else:
                    stat = self._window(spec, kind, key, start, final=closed)
                if stat is not None:
                    out.append(stat)
        for spec in due:
            self._pending_updates[spec.name].clear()
            self._next_update[spec.name] = now + self._update_every_s[spec.name]
        self._dirty.clear()
        return out

    def checkpoint(self) -> None:
        """Stage the watermark in ``meta``, with the panes and ids it was computed from.

        Call it whenever the state is written, not only after emitting: the watermark decides
        which events are late, so an engine restarted from state written between two emits
        must not start from an older one (it would count a late event as on time).
        """
        if self._wm is not None and self.meta.get("wm") != self._wm:
            self.meta["wm"] = self._wm
        for pane, ids in self._new_ids.items():
            entries = self._id_entries.setdefault(pane, [])
            entry = f"ids|{pane}|{len(entries)}"
            while entry in self.seen:  # taken (an entry of this pane was written before a restart)
                entry += "+"
            self.seen[entry] = ids
            entries.append(entry)
        self._new_ids.clear()

    def commit(self) -> None:
        """Record that the last :meth:`collect` was written; persist the watermark; prune."""
        self.checkpoint()
        for name, end in self._pending_final.items():
            self.meta[f"final:{name}"] = end
        self._pending_final.clear()
        self._prune()

    def _windows_ending_in(self, spec: WindowSpec, lo: int | None, hi: int) -> Iterator[tuple[str, str, int]]:
        """(kind, key, start) of windows with data whose end is in ``(lo, hi]``."""
        d, step = spec.duration_ms, spec.step_ms
        # the starts whose end is in (lo, hi]: multiples of step in (lo - d, hi - d]
        first_ok = None if lo is None else ((lo - d) // step + 1) * step
        last_ok = ((hi - d) // step) * step
        panes = sorted(p for p in self._by_pane if p < hi and (lo is None or p >= lo - d))
        seen: set[tuple[str, str, int]] = set()
        for pane in panes:
            within = spec.starts_containing(pane)
            lowest = within.start if first_ok is None else max(within.start, first_ok)
            keys = self._by_pane[pane]
            for start in range(lowest, min(within.stop, last_ok + 1), step):
                seen.update((kind, key, start) for kind, key in keys)
        yield from sorted(seen, key=lambda t: (t[2], t[0], t[1]))

    def _window(self, spec: WindowSpec, kind: str, key: str, start: int, final: bool) -> WindowStat | None:
        """The aggregate of one window from its panes, or ``None`` when it holds nothing.

        Only the key's panes that exist are read (``_by_key``, sorted), not every pane slot of
        the window: the newest window of an hour-long shape mostly lies in the future.
        """
        n = 0
        total = 0.0
        neg = 0
        late = 0
        examples: list[list[Any]] = []
        get = self.panes.get
        starts = self._by_key.get((kind, key), ())
        lo = bisect.bisect_left(starts, start)
        hi = bisect.bisect_left(starts, start + spec.duration_ms, lo)
        for i in range(lo, hi):
            state = get(f"{kind}{_SEP}{starts[i]}{_SEP}{key}")
            if state is None:
                continue
            n += state["n"]
            total += state["s"]
            neg += state["neg"]
            late += state["late"]
            examples.extend(state["ex"])
        if n == 0 and late == 0:
            return None
        if len(examples) > 1:
            examples.sort(key=example_order)
        return WindowStat(
            kind=cast(WindowKind, kind),  # pane keys are written from WindowKind values
            key=key,
            window=spec.name,
            start_ms=start,
            end_ms=start + spec.duration_ms,
            count=n,
            mean_score=total / n if n else 0.0,
            negative_share=neg / n if n else 0.0,
            late=late,
            examples=tuple(
                # Entities let the notifier link alerts of one cause across windows (state
                # written before they were kept has four fields).
                {"id": e[1], "text": e[2], "url": e[3], "score": e[0], "entities": e[4] if len(e) > 4 else []}
                for e in examples[: self.max_examples]
            ),
            final=final,
        )

    def _prune(self) -> None:
        """Drop panes no open window needs (with a margin) and ids behind the lateness horizon."""
        if self._wm is None:
            return
        # A pane is needed until every window holding it is final (start + max_d + grace <= wm);
        # keep one more max duration so a final recomputed after a crash still sees whole panes.
        pane_limit = self._wm - self.grace_ms - 2 * self.max_duration_ms
        for pane in [p for p in self._by_pane if p + self.pane_ms <= pane_limit]:
            for kind, key in self._by_pane.pop(pane):
                self.panes.pop(_pane_key(kind, pane, key), None)
                self._forget_pane(kind, key, pane)
        # An id older than the lateness horizon can only come back as a late event.
        seen_limit = self._wm - self.grace_ms
        for pane in [p for p in self._seen_by_pane if p + self.pane_ms <= seen_limit]:
            self._ids.difference_update(self._seen_by_pane.pop(pane))
            self._new_ids.pop(pane, None)
            for entry in self._id_entries.pop(pane, ()):
                self.seen.pop(entry, None)

    def _forget_pane(self, kind: str, key: str, pane: int) -> None:
        """Drop ``pane`` from the key's sorted pane list, and the key once it has none."""
        starts = self._by_key.get((kind, key))
        if starts is None:
            return
        i = bisect.bisect_left(starts, pane)
        if i < len(starts) and starts[i] == pane:
            del starts[i]
        if not starts:
            del self._by_key[(kind, key)]

    @property
    def state_sizes(self) -> dict[str, int]:
        """Entries held: panes and remembered post ids, and the panes the in-memory per-key
        index lists (equal to ``panes`` once the index is built; for tests and metrics)."""
        return {
            "panes": len(self.panes),
            "seen": len(self._ids),
            "indexed_panes": sum(len(starts) for starts in self._by_key.values()),
        }
