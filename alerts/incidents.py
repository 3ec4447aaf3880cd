"""Incidents: alerts that fire close together in event time and share their posts.

One scripted burst of bearish posts about ``$NVDA`` moves ``$NVDA`` itself, its topic,
the sources it was posted on and the global key, on several signals each. Those alerts
are one *incident*; :class:`IncidentBook` forms incidents from alert events and decides
which notification ("page") each event belongs to, so the notifier sends one firing page
and one resolution page per incident. It is pure logic (no I/O): the notifier persists
:meth:`Incident.to_record` to a compacted topic before delivering, and loads it back on
start, which makes the decisions the same after a restart.

Linking rule: a firing alert joins an open incident when

* it shares evidence with it: a post (an id among its ``examples``), a *subject* (an
  entity named by most of its example posts; an entity alert's subject is its key), or
  the same ``(kind, key)`` as a member, **and**
* its window lies within ``gap_ms`` of the incident's event-time span
  (``episode_start_ms`` of the first member … latest member window end).

A **global** alert that shares no evidence also joins when the incident's still-firing
entity members *explain* at least ``explain_min`` (half) of its excess on the same signal
(:func:`incident_explains`): every post of an entity is a post of the global key, so
``$NVDA``'s ~50 excess bearish posts are most of the global key's ~65 even when the whole
stream's three most negative example posts are about other things. Topics and sources
still need shared evidence: an entity's posts need not be in a given topic or source (the
classifier picks a topic per post), so a large entity excess says nothing about them. Such
an explained member adds no posts or subjects to the incident (its examples are about
other things and must not pull their entities in).

A firing alert whose episode is already a member (a re-read after a restart) is not
added again. A resolved alert updates its member; when every member has resolved, the
incident closes.

>>> from newswatch.alerts.events import AlertEvent
>>> def alert(kind, key, ids, obs, base, n):
...     ex = tuple({"id": i, "text": i, "url": None, "score": -0.9} for i in ids)
...     return AlertEvent(fingerprint=kind + key, status="firing", severity="warning",
...         kind=kind, key=key, signal="negative_share", rule="r", window="w", start_ms=0,
...         end_ms=60_000, episode_start_ms=0, observed=obs, baseline=base, score=0.9,
...         support=n, examples=ex)
>>> book = IncidentBook(gap_ms=300_000)
>>> plan = book.observe([alert("entity", "$X", ["p1", "p2"], 0.9, 0.2, 100),
...                      alert("topic", "Tech", ["p2", "p9"], 0.5, 0.3, 400)])
>>> [(p.incident.lead().key, p.status, len(p.alerts)) for p in plan.pages]
[('$X', 'firing', 2)]
>>> print(plan.pages[0].summary().summary)
$X explains 88 % of the rise in topic Tech's negative share; also moved: topic Tech
>>> glob = alert("global", "all", ["g1"], 0.3, 0.2, 800)  # 80 excess bearish posts, 70 of them $X's
>>> [(p.status, len(p.alerts)) for p in book.observe([glob]).pages], len(book.incidents)
([], 1)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.sinks.base import IncidentSummary
from newswatch.io.schemas import LIMITS, RecordError, _field

__all__ = [
    "Incident",
    "IncidentBook",
    "Page",
    "Plan",
    "excess",
    "explained_share",
    "incident_explains",
    "subjects",
]

#: Specificity of key kinds: the lead of an incident is its most specific key.
KIND_ORDER = {"entity": 0, "source": 1, "topic": 2, "global": 3}
#: Signal preference when one number has to explain a related key's move.
_SIGNAL_ORDER = ("negative_share", "mean_sentiment", "volume")
_SIGNAL_WORDS = {
    "negative_share": "rise in {k} negative share",
    "mean_sentiment": "fall in {k} mean sentiment",
    "volume": "rise in {k} volume",
}
#: Open incidents whose span ended this long (event time) before the newest alert are dropped.
STALE_MS = 24 * 3600 * 1000
#: Evidence posts listed per notification.
MAX_EVIDENCE = 5
#: Post ids remembered per incident for linking.
MAX_POSTS = 500
#: Share of a global alert's excess an incident's entities must explain for it to join.
EXPLAIN_MIN = 0.5


def episode_of(a: AlertEvent) -> str:
    """``<fingerprint>-<episode_start_ms>``: one firing episode of one series."""
    return f"{a.fingerprint}-{a.episode_start_ms}"


def post_ids(a: AlertEvent) -> set[str]:
    """Ids of the posts an alert carries as evidence (its ``examples``)."""
    return {str(e["id"]) for e in a.examples if e.get("id") is not None}


def subjects(a: AlertEvent) -> set[str]:
    """Entities the alert is about: its key for an entity alert, any entity named by one of
    its example posts for the global key, else any entity named by more than half of its
    example posts (posts in different windows are different posts, so this is what links
    ``$NVDA``'s alert to the topic's alert one window later).

    >>> from newswatch.alerts.events import AlertEvent
    >>> ex = ({"id": "1", "entities": ["$X"]}, {"id": "2", "entities": ["$X", "$Y"]}, {"id": "3"})
    >>> a = AlertEvent("f", "firing", "warning", "topic", "Tech", "volume", "r", "w", 0, 1, 0,
    ...                observed=9, baseline=1, score=0.9, support=9, examples=ex)
    >>> sorted(subjects(a))
    ['$X']
    """
    if a.kind == "entity":
        return {a.key}
    counts: dict[str, int] = {}
    for e in a.examples:
        for ent in set(e.get("entities") or ()):
            counts[str(ent)] = counts.get(str(ent), 0) + 1
    n = len(a.examples)
    if a.kind == "global":
        # The whole stream's most negative posts: one post about an entity links it (the
        # global key moves with every incident; the event-time gap still bounds the join).
        return set(counts)
    return {ent for ent, c in counts.items() if n >= 2 and 2 * c > n}


def excess(a: AlertEvent) -> float | None:
    """The alert's move above its baseline in posts (``None`` without a baseline).

    ``volume``: excess posts; ``negative_share``: excess bearish posts
    (``support · (observed − baseline)``); ``mean_sentiment``: excess negative sentiment
    mass (``support · (baseline − observed)``).
    """
    if a.baseline is None:
        return None
    if a.signal == "volume":
        return a.observed - a.baseline
    if a.signal == "negative_share":
        return a.support * (a.observed - a.baseline)
    if a.signal == "mean_sentiment":
        return a.support * (a.baseline - a.observed)
    return None


def _scaled_excess(a: AlertEvent, other: AlertEvent) -> float | None:
    """``a``'s excess over a window as long as ``other``'s (windows of different lengths)."""
    mine = excess(a)
    if mine is None:
        return None
    length, theirs = a.end_ms - a.start_ms, other.end_ms - other.start_ms
    return mine * theirs / length if length > 0 and theirs > 0 and length != theirs else mine


def explained_share(lead: AlertEvent, other: AlertEvent) -> float | None:
    """The part of ``other``'s excess that ``lead``'s excess accounts for, in [0, 1]
    (per unit of time where their windows differ in length).

    >>> from dataclasses import replace
    >>> from newswatch.alerts.events import AlertEvent
    >>> a = AlertEvent("f", "firing", "warning", "entity", "$X", "negative_share", "r", "w",
    ...                0, 1, 0, observed=0.8, baseline=0.2, score=0.9, support=50)
    >>> b = replace(a, kind="topic", key="Tech", observed=0.4, support=200)  # 40 excess
    >>> explained_share(a, b)  # 50 · 0.6 = 30 of 40
    0.75
    """
    return _share([lead], other)


def _share(parts: Iterable[AlertEvent], other: AlertEvent) -> float | None:
    """The part of ``other``'s excess that the summed excess of ``parts`` accounts for, in [0, 1]."""
    theirs = excess(other)
    if theirs is None or theirs <= 0:
        return None
    mine = 0.0
    for a in parts:
        part = _scaled_excess(a, other)
        if part is None:
            return None
        mine += max(0.0, part)
    return round(min(1.0, mine / theirs), 4)


def incident_explains(incident: Incident, a: AlertEvent) -> float | None:
    """The part of ``a``'s excess that the incident's still-firing entity members explain.

    Each entity key counts once, with its latest firing episode of ``a``'s signal; their
    excesses add up (two tickers of one incident). ``None`` where no such member exists
    or ``a`` has no excess to explain.
    """
    latest: dict[str, AlertEvent] = {}
    for m in incident.members.values():
        f = m.firing
        if m.resolved is not None or f.kind != "entity" or f.signal != a.signal:
            continue
        if f.key not in latest or f.episode_start_ms > latest[f.key].episode_start_ms:
            latest[f.key] = f
    if not latest:
        return None
    return _share(latest.values(), a)


@dataclass(slots=True)
class Member:
    """One alert episode of an incident: its firing event and, once it ended, its resolution."""

    firing: AlertEvent
    resolved: AlertEvent | None = None


@dataclass(slots=True)
class Incident:
    """Alerts of one cause. ``paged``/``resolution`` hold the idempotency keys of its two pages."""

    id: str
    dedup_key: str
    start_ms: int
    end_ms: int
    members: dict[str, Member] = field(default_factory=dict)
    posts: list[str] = field(default_factory=list)
    subjects: set[str] = field(default_factory=set)
    paged: tuple[str, ...] | None = None
    resolution: tuple[str, ...] | None = None

    @property
    def closed(self) -> bool:
        """Every member resolved and the resolution page decided."""
        return self.resolution is not None

    @property
    def keys(self) -> set[tuple[str, str]]:
        """The (kind, key) pairs of its members."""
        return {(m.firing.kind, m.firing.key) for m in self.members.values()}

    def add(self, a: AlertEvent, max_posts: int = MAX_POSTS, evidence: bool = True) -> list[str]:
        """Add a firing episode; extend the span and (unless ``evidence`` is False: a member
        joined because the incident explains it) the evidence; return post ids no longer kept."""
        self.members[episode_of(a)] = Member(a)
        self.start_ms = min(self.start_ms, a.episode_start_ms)
        self.end_ms = max(self.end_ms, a.end_ms)
        if not evidence:
            return []
        self.subjects |= subjects(a)
        known = set(self.posts)
        self.posts.extend(sorted(post_ids(a) - known))
        dropped = self.posts[:-max_posts]
        del self.posts[:-max_posts]
        return dropped

    def lead(self) -> AlertEvent:
        """The firing event of the most specific key (entity < source < topic < global).

        Ties go to the key with the highest score, then the most signals, then the name.
        """
        by_key: dict[tuple[str, str], list[AlertEvent]] = {}
        for m in self.members.values():
            by_key.setdefault((m.firing.kind, m.firing.key), []).append(m.firing)
        best = min(
            by_key.items(),
            key=lambda kv: (
                KIND_ORDER.get(kv[0][0], 9),
                -max(a.score for a in kv[1]),
                -len(kv[1]),
                kv[0][1],
            ),
        )
        return max(best[1], key=lambda a: (a.score, a.signal))

    def summary(self, status: str, member_groups: dict[str, str] | None = None) -> IncidentSummary:
        """What every sink shows: lead key, its explanation, the keys that also moved, evidence."""
        lead = self.lead()
        firing = [m.firing for m in self.members.values()]
        lead_signals = {a.signal: a for a in firing if (a.kind, a.key) == (lead.kind, lead.key)}
        others: dict[tuple[str, str], dict[str, AlertEvent]] = {}
        for a in firing:
            if (a.kind, a.key) != (lead.kind, lead.key):
                others.setdefault((a.kind, a.key), {})[a.signal] = a
        also: list[dict[str, Any]] = []
        for (kind, key), signals in sorted(
            others.items(), key=lambda kv: (KIND_ORDER.get(kv[0][0], 9), kv[0][1])
        ):
            explained = {
                s: share
                for s in _SIGNAL_ORDER
                if s in signals and s in lead_signals
                if (share := explained_share(lead_signals[s], signals[s])) is not None
            }
            also.append({"kind": kind, "key": key, "signals": sorted(signals), "explained": explained})
        return IncidentSummary(
            id=self.id,
            status=status,
            dedup_key=self.dedup_key,
            lead_kind=lead.kind,
            lead_key=lead.key,
            lead_signals=tuple(sorted(lead_signals)),
            summary=_sentence(lead, also),
            also_moved=tuple(also),
            evidence=tuple(_evidence(lead, firing)),
            start_ms=self.start_ms,
            end_ms=self.end_ms,
            member_groups=dict(member_groups or {}),
        )

    def to_record(self) -> bytes:
        """The incident-log value (JSON); :meth:`from_record` reads it back."""
        d = {
            "id": self.id,
            "dedup_key": self.dedup_key,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "members": [
                {"firing": m.firing.to_dict(), "resolved": m.resolved.to_dict() if m.resolved else None}
                for m in self.members.values()
            ],
            "posts": self.posts,
            "subjects": sorted(self.subjects),
            "paged": None if self.paged is None else list(self.paged),
            "resolution": None if self.resolution is None else list(self.resolution),
        }
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_record(cls, raw: bytes) -> Incident:
        """Parse an incident-log value, checked like an alert event (its members are parsed by
        :meth:`AlertEvent.from_json`); raises :class:`~newswatch.io.schemas.RecordError`."""
        try:
            return cls._from_record(raw)
        except RecordError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise RecordError("invalid_incident", f"{type(exc).__name__}: {str(exc)[:200]}") from None

    @classmethod
    def _from_record(cls, raw: bytes) -> Incident:
        d = json.loads(raw)
        inc = cls(
            id=_field(d, "id", str, LIMITS.id),
            dedup_key=_field(d, "dedup_key", str, LIMITS.id),
            start_ms=_field(d, "start_ms", int),
            end_ms=_field(d, "end_ms", int),
        )
        for m in _field(d, "members", list):
            firing = _event(m["firing"])
            inc.members[episode_of(firing)] = Member(firing, _event(m["resolved"]) if m["resolved"] else None)
        inc.posts = _strings(d, "posts")
        inc.subjects = set(_strings(d, "subjects"))
        paged, resolution = d.get("paged"), d.get("resolution")
        inc.paged = None if paged is None else tuple(_strings(d, "paged"))
        inc.resolution = None if resolution is None else tuple(_strings(d, "resolution"))
        return inc


_K = TypeVar("_K")


def _unindex(index: dict[_K, set[str]], keys: Iterable[_K], incident_id: str) -> None:
    for k in keys:
        ids = index.get(k)
        if ids is not None:
            ids.discard(incident_id)
            if not ids:
                del index[k]


def _event(d: dict[str, Any]) -> AlertEvent:
    return AlertEvent.from_json(json.dumps(d))


def _strings(d: dict[str, Any], name: str) -> list[str]:
    """An optional list of strings (post ids, entities, idempotency keys)."""
    values = _field(d, name, list, optional=True) or []
    if not all(isinstance(v, str) and len(v) <= LIMITS.id for v in values):
        raise RecordError("invalid_incident", f"'{name}' must be a list of short strings")
    return list(values)


def _label(kind: str, key: str) -> str:
    if kind == "entity":
        return key
    return "global" if kind == "global" else f"{kind} {key}"


#: Which related key the one-line summary quotes: the topic says most about the cause.
_SUMMARY_ORDER = {"topic": 0, "global": 1, "source": 2, "entity": 3}


def _sentence(lead: AlertEvent, also: list[dict[str, Any]]) -> str:
    """``$NVDA explains 92 % of the rise in topic Financials' negative share; also moved: …``."""
    head = _label(lead.kind, lead.key)
    explained = [a for a in also if a["explained"]]
    if explained:
        top = min(explained, key=lambda a: (_SUMMARY_ORDER.get(a["kind"], 9), a["key"]))
        signal = next(s for s in _SIGNAL_ORDER if s in top["explained"])
        pct = round(100 * top["explained"][signal])
        label = _label(top["kind"], top["key"])
        what = _SIGNAL_WORDS[signal].format(k=label + ("'" if label.endswith("s") else "'s"))
        head = f"{head} explains {pct} % of the {what}"
    else:
        head = f"{head} moved ({', '.join(sorted({lead.signal}))})"
    if also:
        head += "; also moved: " + ", ".join(_label(a["kind"], a["key"]) for a in also)
    return head


def _evidence(lead: AlertEvent, firing: list[AlertEvent]) -> list[dict[str, Any]]:
    """Example posts, the lead's first, then those shared by most members, most negative first."""
    posts: dict[str, dict[str, Any]] = {}
    shared: dict[str, int] = {}
    for a in firing:
        for e in a.examples:
            pid = str(e.get("id"))
            posts.setdefault(pid, dict(e))
            shared[pid] = shared.get(pid, 0) + 1
    mine = post_ids(lead)

    def order(pid: str) -> tuple[int, int, float, str]:
        score = posts[pid].get("score")
        return (pid not in mine, -shared[pid], float(score) if isinstance(score, int | float) else 0.0, pid)

    return [posts[p] for p in sorted(posts, key=order)[:MAX_EVIDENCE]]


@dataclass(frozen=True, slots=True)
class Page:
    """One incident notification: the incident, ``firing`` or ``resolved``, and its alerts."""

    incident: Incident
    status: str
    alerts: tuple[AlertEvent, ...]

    def summary(self, member_groups: dict[str, str] | None = None) -> IncidentSummary:
        """The incident summary sinks render."""
        return self.incident.summary(self.status, member_groups)


@dataclass(slots=True)
class Plan:
    """What the notifier does with one batch of alert events.

    ``pages``: incident notifications (two or more alerts); ``loose``: events for the
    ordinary (group, signal, status) grouping (alerts alone in their incident, and
    resolutions of alerts no incident knows); ``absorbed``: events covered by a page
    already sent (a later member joining, a member resolving while others fire);
    ``changed``: incidents to persist before delivering.
    """

    pages: list[Page] = field(default_factory=list)
    loose: list[AlertEvent] = field(default_factory=list)
    absorbed: list[AlertEvent] = field(default_factory=list)
    changed: list[Incident] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class IncidentBook:
    """Open incidents and the rule that turns alert events into pages.

    Parameters
    ----------
    gap_ms
        Event-time distance within which a firing alert sharing posts joins an incident.
    max_members
        Alert episodes per incident; beyond it a linked alert starts a new incident.
    explain_min
        Share of a global alert's excess the incident's firing entities must explain for it
        to join without shared evidence (:func:`incident_explains`).
    """

    def __init__(
        self, gap_ms: int = 600_000, max_members: int = 200, explain_min: float = EXPLAIN_MIN
    ) -> None:
        self.gap_ms = gap_ms
        self.max_members = max_members
        self.explain_min = explain_min
        self.incidents: dict[str, Incident] = {}
        self._member_of: dict[str, str] = {}
        # Evidence → incident ids, so linking an alert costs its evidence, not the open incidents.
        self._by_post: dict[str, set[str]] = {}
        self._by_subject: dict[str, set[str]] = {}
        self._by_key: dict[tuple[str, str], set[str]] = {}
        self._clock_ms = 0

    def load(self, records: Iterable[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes, RecordError]]:
        """Rebuild from the incident log (later records of a key replace earlier ones).

        Returns the ``(key, value, error)`` of the latest records that are not incidents
        (skipped: the notifier dead-letters them as ``invalid_incident`` and carries on).
        """
        latest: dict[bytes, bytes | None] = {}
        for key, value in records:
            latest[key] = value
        skipped: list[tuple[bytes, bytes, RecordError]] = []
        for key, value in latest.items():
            if value:
                try:
                    inc = Incident.from_record(value)
                except RecordError as exc:
                    skipped.append((key, value, exc))
                    continue
                self.incidents[inc.id] = inc
                self._index(inc, inc.posts)
                for m in inc.members.values():
                    self._index_member(inc, m.firing)
                self._clock_ms = max(self._clock_ms, inc.end_ms)
        return skipped

    def forget(self, incident_id: str) -> None:
        """Drop an incident from memory (after its tombstone is written)."""
        inc = self.incidents.pop(incident_id, None)
        if inc is None:
            return
        for ep in inc.members:
            if self._member_of.get(ep) == incident_id:
                del self._member_of[ep]
        _unindex(self._by_post, inc.posts, incident_id)
        _unindex(self._by_subject, inc.subjects, incident_id)
        _unindex(self._by_key, inc.keys, incident_id)

    def _index(self, inc: Incident, posts: Iterable[str]) -> None:
        for pid in posts:
            self._by_post.setdefault(pid, set()).add(inc.id)
        for subject in inc.subjects:
            self._by_subject.setdefault(subject, set()).add(inc.id)

    def _index_member(self, inc: Incident, a: AlertEvent) -> None:
        self._member_of[episode_of(a)] = inc.id
        self._by_key.setdefault((a.kind, a.key), set()).add(inc.id)

    def _join(self, inc: Incident, a: AlertEvent, evidence: bool = True) -> None:
        _unindex(self._by_post, inc.add(a, evidence=evidence), inc.id)
        if evidence:
            self._index(inc, post_ids(a))
        self._index_member(inc, a)

    def _open_near(self, inc: Incident, a: AlertEvent) -> bool:
        """``inc`` is open, has room, and its span lies within the gap of ``a``'s window."""
        if inc.closed or len(inc.members) >= self.max_members:
            return False
        return not (a.end_ms < inc.start_ms - self.gap_ms or a.start_ms > inc.end_ms + self.gap_ms)

    def _explained_by(self, a: AlertEvent) -> Incident | None:
        """The open incident whose firing entities explain most of global alert ``a``'s excess
        (at least ``explain_min``; ties: the oldest)."""
        if a.kind != "global":
            return None
        best: tuple[float, int, str] | None = None
        found: Incident | None = None
        for inc in self.incidents.values():
            if not self._open_near(inc, a):
                continue
            share = incident_explains(inc, a)
            if share is None or share < self.explain_min:
                continue
            rank = (-share, inc.start_ms, inc.id)
            if best is None or rank < best:
                best, found = rank, inc
        return found

    def _link(self, a: AlertEvent) -> Incident | None:
        """The open incident ``a`` shares evidence with: same key first, then most shared posts,
        then oldest."""
        ids = post_ids(a)
        about = subjects(a)
        candidates = set(self._by_key.get((a.kind, a.key), ()))
        for pid in ids:
            candidates.update(self._by_post.get(pid, ()))
        for subject in about:
            candidates.update(self._by_subject.get(subject, ()))
        best: tuple[bool, int, int, str] | None = None
        found: Incident | None = None
        for inc_id in candidates:
            inc = self.incidents[inc_id]
            if not self._open_near(inc, a):
                continue
            shared = len(ids.intersection(inc.posts))
            same_key = (a.kind, a.key) in inc.keys
            if not shared and not same_key and not about & inc.subjects:
                continue
            rank = (not same_key, -shared, inc.start_ms, inc.id)
            if best is None or rank < best:
                best, found = rank, inc
        return found

    def _place(self, fresh: list[AlertEvent], changed: dict[str, Incident]) -> None:
        """Put new firing episodes into incidents: join where evidence links (or, for the
        global key, where an incident explains it), else open one.

        Repeated until nothing links, opening one incident (the most specific alert left) at
        a time, so the order of a batch does not decide: a source sharing a post only with
        the global key joins the entity's incident once the global key has.
        """
        pending = fresh
        while pending:
            rest: list[AlertEvent] = []
            for e in pending:
                inc = self._link(e)
                evidence = inc is not None
                if inc is None:
                    inc = self._explained_by(e)
                if inc is None:
                    rest.append(e)
                    continue
                self._join(inc, e, evidence)
                changed[inc.id] = inc
            if len(rest) == len(pending):
                e = min(rest, key=lambda a: (KIND_ORDER.get(a.kind, 9), a.end_ms, a.idempotency_key))
                rest.remove(e)
                inc = Incident(
                    id="inc_" + hashlib.sha256(e.idempotency_key.encode()).hexdigest()[:16],
                    dedup_key=e.fingerprint,
                    start_ms=e.episode_start_ms,
                    end_ms=e.end_ms,
                )
                self.incidents[inc.id] = inc
                self._join(inc, e)
                changed[inc.id] = inc
            pending = rest

    def observe(self, events: Iterable[AlertEvent]) -> Plan:
        """Fold a batch of events into the incidents and plan its notifications.

        Re-observing events (a batch read again after a restart, with the state loaded
        from the log) plans the same pages, so their ids and delivery-log keys match.
        """
        plan = Plan()
        unique = {e.idempotency_key: e for e in events}
        ordered = sorted(
            unique.values(),
            key=lambda e: (e.end_ms, e.status == "resolved", KIND_ORDER.get(e.kind, 9), e.idempotency_key),
        )
        changed: dict[str, Incident] = {}
        fresh = [e for e in ordered if e.status == "firing" and episode_of(e) not in self._member_of]
        self._place(fresh, changed)
        touched: dict[str, Incident] = {}
        where: dict[str, Incident | None] = {}
        for e in ordered:
            self._clock_ms = max(self._clock_ms, e.end_ms)
            ep = episode_of(e)
            inc_id = self._member_of.get(ep)
            inc = self.incidents.get(inc_id) if inc_id else None
            if e.status == "resolved" and inc is not None and inc.members[ep].resolved is None:
                inc.members[ep].resolved = e
                inc.end_ms = max(inc.end_ms, e.end_ms)
                changed[inc.id] = inc
            where[e.idempotency_key] = inc
            if inc is not None:
                touched[inc.id] = inc
        for inc in touched.values():
            if inc.paged is None:
                inc.paged = tuple(sorted(m.firing.idempotency_key for m in inc.members.values()))
                changed[inc.id] = inc
            if inc.resolution is None and all(m.resolved for m in inc.members.values()):
                inc.resolution = tuple(
                    sorted(m.resolved.idempotency_key for m in inc.members.values() if m.resolved)
                )
                changed[inc.id] = inc
        pages: dict[tuple[str, str], Page] = {}
        for e in ordered:
            inc = where[e.idempotency_key]
            if inc is None:
                plan.loose.append(e)
                continue
            keys = inc.paged if e.status == "firing" else inc.resolution
            if not keys or e.idempotency_key not in keys:
                plan.absorbed.append(e)
                continue
            if len(keys) == 1:
                plan.loose.append(e)  # alone in its incident: ordinary grouping, unchanged ids
                continue
            if (inc.id, e.status) not in pages:
                pages[(inc.id, e.status)] = Page(inc, e.status, self._page_alerts(inc, e.status))
        plan.pages = list(pages.values())
        plan.changed = list(changed.values())
        plan.dropped = self._expire()
        return plan

    @staticmethod
    def _page_alerts(inc: Incident, status: str) -> tuple[AlertEvent, ...]:
        keys = set((inc.paged if status == "firing" else inc.resolution) or ())
        out: list[AlertEvent] = []
        for m in inc.members.values():
            a = m.firing if status == "firing" else m.resolved
            if a is not None and a.idempotency_key in keys:
                out.append(a)
        lead = inc.lead()
        out.sort(
            key=lambda a: (
                (a.kind, a.key) != (lead.kind, lead.key),
                KIND_ORDER.get(a.kind, 9),
                a.key,
                a.signal,
            )
        )
        return tuple(out)

    def _expire(self) -> list[str]:
        """Ids of open incidents stale by :data:`STALE_MS` of event time (their members never resolved)."""
        return [
            inc.id
            for inc in self.incidents.values()
            if not inc.closed and self._clock_ms - inc.end_ms > STALE_MS
        ]

    def closed_ids(self) -> list[str]:
        """Ids of closed incidents still held (to tombstone once their batch is committed)."""
        return [i for i, inc in self.incidents.items() if inc.closed]


def member_groups(alerts: Iterable[AlertEvent], group_of: Callable[[AlertEvent], str]) -> dict[str, str]:
    """Fingerprint → routing group, so per-alert labels stay those of a standalone notification."""
    return {a.fingerprint: group_of(a) for a in alerts}
