"""Real-stream page budget: StockNet tweets in event time through classify → aggregate → alerts → notify.

The 96,826 StockNet tweets (``../shared/data/stocknet_tweets/stocknet_tweets_2014_2016.csv``,
deduplicated on tweet_id, sorted by ``created_at``; 2014-01 … 2016-03, 87 tickers) are
published as fast as the pipeline takes them, **keeping their own timestamps**: the
aggregator's windows and the alert engine follow event time, so 27 months of windows
close in minutes. Every stage is the real one, as its own process on the embedded broker
(``newswatch classify``, ``newswatch aggregate``, ``newswatch alerts run``,
``newswatch notify``) with the shipped model and this process's settings (so
``NEWSWATCH_CONFIG`` / ``NEWSWATCH_ALERTS_*`` apply). What arrives at a loopback webhook
receiver (``notify.webhook_urls``) is counted, each notification attributed to the
event-time UTC day of its alert windows (earliest ``start_ms`` in the payload).

Three things differ from a live deployment, on purpose:

* **Windows**: the aggregator computes only the window shapes the detectors watch
  (``alerts.windows``, default ``tumbling_60000``). The default aggregator also emits
  5-minute and 1-hour hopping windows that no detector reads; over 27 months of sparse
  posts they are ~17 M final records (``--all-windows`` keeps them: hours, not minutes).
* **Partitions**: one per topic (``--partitions``), so posts stay in event-time order end to
  end and none is late; the aggregator's late counter is reported and should be 0.
* **Notification pacing**: the notifier gathers alerts for ``notify.group_wait_s`` of *wall*
  time. Replayed ~60,000× faster than real time, days of alerts would arrive within one
  gathering period and merge into far fewer notifications than live. So the alerts topic
  the detection stage writes is relayed to the notifier's topic in event-time groups:
  alerts whose windows end within ``group_wait_s`` of each other (event time) are handed
  over together, and the next group only after the notifier committed the previous one
  (the notifier itself runs with ``group_wait_s`` = ``--notify-wait-s``, default 0). What a
  notification contains, how alerts are grouped into it and what is sent stay the
  notifier's own decisions.

The last windows are closed by a flush post dated after the last tweet by the longest window
+ grace + (``alerts.resolve_windows`` + 3) windows; it is not counted as a post, and
notifications it causes (alerts resolving because keys fell silent) are reported apart.

Prints JSON (``--json``: one line at the end); a progress bar on a terminal::

    python bench/pages.py --json                    # the whole stream: 6-22 min on 2 shared cores
    python bench/pages.py --limit 3000 --json       # the first 3,000 posts: a quick check
    python bench/pages.py --out pages.json --md pages.md --raw pages-raw.json
    python bench/pages.py --reanalyse pages-raw.json --md pages.md   # the report again, no run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from newswatch.demo.broker import EmbeddedBroker, free_port
from newswatch.demo.replay import ReplayRecord, load_records, replay
from newswatch.demo.stages import StageProcess, counter_by, stage_process
from newswatch.io.kafka import create_topics, make_producer
from newswatch.settings import KafkaSettings, Settings, load_settings

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "stocknet_tweets"
DEFAULT_FILE = DATA / "stocknet_tweets_2014_2016.csv"
PACED_TOPIC = "newswatch.pages.alerts"
FLUSH_ID = "newswatch-pages-flush"
BUDGET_PER_DAY = 2.0
DAY_MS = 86_400_000


# pure helpers (tested in tests/bench/test_pages.py) --------------------------------------------
def day_of(ms: int) -> str:
    """UTC date of an epoch-ms time.

    >>> day_of(0)
    '1970-01-01'
    """
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def window_shapes(names: Sequence[str]) -> tuple[int, tuple[tuple[int, int], ...]]:
    """``(tumbling_ms, hopping)`` of an aggregator computing exactly the named windows.

    >>> window_shapes(["tumbling_60000"])
    (60000, ())
    >>> window_shapes(["hopping_3600000_60000"])
    (60000, ((3600000, 60000),))
    """
    tumbling: list[int] = []
    hopping: list[tuple[int, int]] = []
    for name in names:
        m = re.fullmatch(r"tumbling_(\d+)|hopping_(\d+)_(\d+)", name)
        if m is None:
            raise SystemExit(f"alerts.windows: cannot read window name {name!r}")
        if m.group(1):
            tumbling.append(int(m.group(1)))
        else:
            hopping.append((int(m.group(2)), int(m.group(3))))
    if tumbling:
        return tumbling[0], tuple(dict.fromkeys([*((d, d) for d in tumbling[1:]), *hopping]))
    # the aggregator always has a tumbling bucket: the smallest step (one extra, unread shape)
    return max(1_000, min(s for _, s in hopping)), tuple(dict.fromkeys(hopping))


def window_ms(name: str) -> int:
    """Duration of a window named ``tumbling_<d>`` or ``hopping_<d>_<s>``."""
    return int(name.split("_")[1])


def joins(group: Sequence[dict[str, Any]], alert: dict[str, Any], width_ms: int) -> bool:
    """Whether ``alert`` joins the open ``group``: its window ends within ``width_ms`` after the first's."""
    return 0 <= int(alert["end_ms"]) - int(group[0]["end_ms"]) <= width_ms


def buckets(alerts: Sequence[dict[str, Any]], width_ms: int) -> list[list[dict[str, Any]]]:
    """Consecutive runs of alerts whose windows end within ``width_ms`` of the run's first one.

    What a live notifier would have gathered in one ``group_wait_s``: the alerts a watermark
    step released together (their windows end at the same event time).

    >>> [[a["end_ms"] for a in b] for b in buckets([{"end_ms": t} for t in (60, 60, 120, 60)], 5)]
    [[60, 60], [120], [60]]
    """
    out: list[list[dict[str, Any]]] = []
    for a in alerts:
        if out and joins(out[-1], a, width_ms):
            out[-1].append(a)
        else:
            out.append([a])
    return out


def notification_day(payload: dict[str, Any]) -> str | None:
    """Event-time day of a webhook notification: the earliest window start of its alerts."""
    starts = [int(a["start_ms"]) for a in payload.get("alerts") or () if "start_ms" in a]
    return day_of(min(starts)) if starts else None


def unique_notifications(received: Sequence[tuple[dict[str, str], dict[str, Any]]]) -> list[dict[str, Any]]:
    """Payloads by notification id (``webhook-id`` header, else payload ``id``): a retry counts once."""
    seen: dict[str, dict[str, Any]] = {}
    for i, (headers, payload) in enumerate(received):
        lower = {k.lower(): v for k, v in headers.items()}
        ident = lower.get("webhook-id") or str(payload.get("id") or f"#{i}")
        seen.setdefault(ident, payload)
    return list(seen.values())


def incidents(alerts: Sequence[dict[str, Any]], end_ms: int) -> list[dict[str, Any]]:
    """Firing episodes merged into incidents: episodes (firing → its resolve) that overlap in event time.

    Each incident lists its firing alerts, keys, signals, the largest window count among
    them (``posts``) and the most negative example posts (deduplicated); sorted largest first
    (alerts, then posts).
    """
    resolved: dict[tuple[str, int], int] = {}
    for a in alerts:
        if a["status"] == "resolved":
            resolved[(a["fingerprint"], int(a["episode_start_ms"]))] = int(a["end_ms"])
    episodes = []
    for a in alerts:
        if a["status"] != "firing":
            continue
        start = int(a["episode_start_ms"])
        stop = resolved.get((a["fingerprint"], start), end_ms)
        episodes.append((start, max(stop, int(a["end_ms"])), a))
    episodes.sort(key=lambda e: (e[0], e[1]))
    groups: list[tuple[int, int, list[dict[str, Any]]]] = []
    for start, stop, a in episodes:
        if groups and start < groups[-1][1]:
            s0, e0, members = groups[-1]
            members.append(a)
            groups[-1] = (s0, max(e0, stop), members)
        else:
            groups.append((start, stop, [a]))
    related: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in alerts:
        related[a["fingerprint"]].append(a)
    out: list[dict[str, Any]] = []
    for start, stop, members in groups:
        examples: dict[str, dict[str, Any]] = {}
        for m in members:
            for r in related[m["fingerprint"]]:
                if start <= int(r["episode_start_ms"]) < stop:
                    for e in r.get("examples") or ():
                        examples.setdefault(str(e.get("id")), e)
        out.append(
            {
                "start": _iso(start),
                "end": _iso(stop),
                "days": sorted({day_of(start), day_of(max(start, stop - 1))}),
                "alerts": len(members),
                "posts": max(int(m["support"]) for m in members),
                "keys": sorted({f"{m['kind']}:{m['key']}" for m in members}),
                "signals": dict(Counter(m["signal"] for m in members)),
                "severity": "critical" if any(m["severity"] == "critical" for m in members) else "warning",
                "top_posts": _top_posts(examples.values()),
                "_idem": {f"{m['fingerprint']}-{m['episode_start_ms']}" for m in members},
            }
        )
    out.sort(key=lambda i: (-int(i["alerts"]), -int(i["posts"]), str(i["start"])))
    return out


def notifier_incidents(notifications: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The incidents the notifier itself formed (payload ``incident`` objects), largest first.

    Empty when the notifier sends no ``incident`` object (grouping without incidents).
    """
    found: dict[str, dict[str, Any]] = {}
    for note in notifications:
        inc = note.get("incident")
        if not isinstance(inc, dict) or not inc.get("id"):
            continue
        rec = found.setdefault(
            str(inc["id"]),
            {"notifications": 0, "alerts": {}, "evidence": {}, "start_ms": inc.get("start_ms"), "end_ms": 0},
        )
        rec["notifications"] += 1
        if inc.get("status") == "firing" or "lead" not in rec:
            rec["lead"], rec["summary"] = inc.get("lead") or {}, inc.get("summary", "")
        for a in note.get("alerts") or ():
            ident = (
                a.get("idempotency_key")
                or f"{a.get('fingerprint')}-{a.get('episode_start_ms')}-{a.get('status')}"
            )
            rec["alerts"][ident] = a
        for e in [
            *(inc.get("evidence") or ()),
            *(e for a in note.get("alerts") or () for e in a.get("examples") or ()),
        ]:
            rec["evidence"].setdefault(str(e.get("id")), e)
        starts = [int(x) for x in (rec["start_ms"], inc.get("start_ms")) if x is not None]
        rec["start_ms"] = min(starts) if starts else None
        rec["end_ms"] = max(int(rec["end_ms"]), int(inc.get("end_ms") or 0))
    out = []
    for ident, rec in found.items():
        alerts = list(rec["alerts"].values())
        firing = [a for a in alerts if a.get("status") == "firing"] or alerts
        start = int(
            rec["start_ms"] if rec["start_ms"] is not None else min(int(a["start_ms"]) for a in alerts)
        )
        stop = max(int(rec["end_ms"]), max(int(a["end_ms"]) for a in alerts))
        lead = rec.get("lead") or {}
        out.append(
            {
                "id": ident,
                "start": _iso(start),
                "end": _iso(stop),
                "days": sorted({day_of(start), day_of(max(start, stop - 1))}),
                "alerts": len(firing),
                "posts": max(int(a.get("support") or 0) for a in firing),
                "keys": sorted({f"{a['kind']}:{a['key']}" for a in firing}),
                "signals": dict(Counter(str(a["signal"]) for a in firing)),
                "severity": "critical" if any(a.get("severity") == "critical" for a in alerts) else "warning",
                "lead": f"{lead.get('kind')}:{lead.get('key')}" if lead else None,
                "summary": rec.get("summary", ""),
                "notifications": rec["notifications"],
                "top_posts": _top_posts(rec["evidence"].values()),
            }
        )
    out.sort(key=lambda i: (-int(i["alerts"]), -int(i["posts"]), str(i["start"])))
    return out


def _top_posts(examples: Any, n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` most negative example posts, one per text (retweets repeat a text under other ids)."""
    texts: dict[str, dict[str, Any]] = {}
    for e in sorted(examples, key=lambda e: float(e.get("score", 0.0))):
        texts.setdefault(" ".join(str(e.get("text", "")).split()), e)
    return [
        {"score": round(float(e.get("score", 0.0)), 3), "text": str(e.get("text", ""))[:200]}
        for e in list(texts.values())[:n]
    ]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def per_day_stats(per_day: Counter[str], days: int, days_with_posts: int) -> dict[str, Any]:
    """Mean per calendar day of the span and per day with posts, the largest day, the days over budget."""
    values = sorted(per_day.values())
    total = sum(values)
    return {
        "total": total,
        "mean_per_day": round(total / days, 3) if days else None,
        "mean_per_day_with_posts": round(total / days_with_posts, 3) if days_with_posts else None,
        "days_with_any": len(values),
        "max_day": max(values) if values else 0,
        "p90_day": values[min(len(values) - 1, int(0.9 * len(values)))] if values else 0,
        "days_over_budget": sum(1 for v in values if v > BUDGET_PER_DAY),
    }


def analyse(
    raw_alerts: Sequence[dict[str, Any]],
    notifications: Sequence[dict[str, Any]],
    post_ms: Sequence[int],
    flush_ms: int,
    top: int = 10,
) -> dict[str, Any]:
    """The report: notifications and alerts per day and per key kind, busiest days, largest incidents.

    ``post_ms`` are the event times of the replayed posts (sorted); days are UTC calendar days
    from the first post's to the last post's. Alerts and notifications dated after the last
    post (caused by the flush post) are counted apart.
    """
    first, last = post_ms[0], post_ms[-1]
    first_day, last_day = day_of(first), day_of(last)
    span_days = (datetime.fromisoformat(last_day) - datetime.fromisoformat(first_day)).days + 1
    post_days = Counter(day_of(t) for t in post_ms)

    def in_span(d: str) -> bool:
        return first_day <= d <= last_day

    firing = [a for a in raw_alerts if a["status"] == "firing"]
    fired_day = Counter(day_of(int(a["start_ms"])) for a in firing)
    alerts_out = {
        "events": len(raw_alerts),
        "firing": len(firing),
        "resolved": len(raw_alerts) - len(firing),
        "firing_per_day": per_day_stats(
            Counter({d: n for d, n in fired_day.items() if in_span(d)}), span_days, len(post_days)
        ),
        "firing_by_kind": dict(Counter(a["kind"] for a in firing).most_common()),
        "firing_by_signal": dict(Counter(a["signal"] for a in firing).most_common()),
        "firing_by_severity": dict(Counter(a["severity"] for a in firing).most_common()),
        "firing_after_last_post": sum(n for d, n in fired_day.items() if not in_span(d)),
        "fired_per_day": dict(sorted(fired_day.items())),
    }

    note_day = [notification_day(n) or "" for n in notifications]
    is_page = [any(a.get("status") == "firing" for a in n.get("alerts") or ()) for n in notifications]
    per_day = Counter(d for d in note_day if in_span(d))
    page_day = Counter(d for d, page in zip(note_day, is_page, strict=True) if page and in_span(d))
    by_kind: Counter[str] = Counter()
    pages_by_kind: Counter[str] = Counter()
    by_lead_kind: Counter[str] = Counter()  # incident notifications: the kind of the incident's lead key
    for note, page in zip(notifications, is_page, strict=True):
        kinds = sorted({str(a.get("kind")) for a in note.get("alerts") or ()})
        label = kinds[0] if len(kinds) == 1 else "+".join(kinds) or "none"
        by_kind[label] += 1
        if page:
            pages_by_kind[label] += 1
        lead = (note.get("incident") or {}).get("lead") or {}
        if lead.get("kind"):
            by_lead_kind[str(lead["kind"])] += 1
    notes_out = {
        "total": len(notifications),
        "with_firing": sum(is_page),
        "resolved_only": len(notifications) - sum(is_page),
        "per_day": per_day_stats(per_day, span_days, len(post_days)),
        "firing_per_day": per_day_stats(page_day, span_days, len(post_days)),
        "by_kind": dict(by_kind.most_common()),
        "firing_by_kind": dict(pages_by_kind.most_common()),
        "by_lead_kind": dict(by_lead_kind.most_common()),
        "by_status": dict(Counter(str(n.get("status")) for n in notifications).most_common()),
        "alerts_per_notification": _dist([len(n.get("alerts") or ()) for n in notifications]),
        "after_last_post": sum(1 for d in note_day if not in_span(d)),
        "budget_per_day": BUDGET_PER_DAY,
        "within_budget": sum(per_day.values()) / span_days <= BUDGET_PER_DAY,
    }

    fired_by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in firing:
        fired_by_day[day_of(int(a["start_ms"]))].append(a)
    busiest = []
    for d, count in sorted(per_day.items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
        what = Counter(f"{a['kind']}:{a['key']} {a['signal']}" for a in fired_by_day.get(d, ()))
        ex = min(
            (e for a in fired_by_day.get(d, ()) for e in a.get("examples") or ()),
            key=lambda e: float(e.get("score", 0.0)),
            default=None,
        )
        busiest.append(
            {
                "day": d,
                "notifications": count,
                "with_firing": page_day.get(d, 0),
                "alerts_fired": len(fired_by_day.get(d, ())),
                "posts": post_days.get(d, 0),
                "fired": dict(what.most_common(8)),
                "example": None if ex is None else str(ex.get("text", ""))[:200],
            }
        )

    found = incidents(raw_alerts, flush_ms)
    notes_idem = [
        {f"{a.get('fingerprint')}-{a.get('episode_start_ms')}" for a in n.get("alerts") or ()}
        for n in notifications
    ]
    largest = []
    for inc in found[:top]:
        ids = inc.pop("_idem")
        largest.append({**inc, "notifications": sum(1 for s in notes_idem if s & ids)})
    for inc in found[top:]:
        inc.pop("_idem", None)
    from_notifier = notifier_incidents(notifications)
    chosen = (
        {"source": "notifier", "count": len(from_notifier), "largest": from_notifier[:top]}
        if from_notifier
        else {"source": "overlapping episodes", "count": len(found), "largest": largest}
    )
    return {
        "span": {
            "first_post": _iso(first),
            "last_post": _iso(last),
            "days": span_days,
            "days_with_posts": len(post_days),
        },
        "notifications": notes_out,
        "alerts": alerts_out,
        "incidents": chosen,
        "episode_clusters": {"count": len(found), "largest": largest[:3] if from_notifier else []},
        "busiest_days": busiest,
    }


def _dist(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "max": None}
    return {"mean": round(statistics.fmean(values), 2), "max": max(values)}


# processes ----------------------------------------------------------------------------------------
def _settings(base: Settings, bootstrap: str, workdir: Path, args: argparse.Namespace) -> Settings:
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        partitions=args.partitions,
        broker_compat="tansu",
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
    )
    agg_update: dict[str, Any] = {"data_dir": str(workdir / "faust")}
    if not args.all_windows:
        tumbling_ms, hopping = window_shapes(base.alerts.windows)
        agg_update.update(tumbling_ms=tumbling_ms, hopping=hopping)
    return base.model_copy(
        update={
            "kafka": kafka,
            "topics": base.topics.model_copy(),
            "aggregate": base.aggregate.model_copy(update=agg_update),
        }
    )


def _write_config(settings: Settings, path: Path, **sections: dict[str, Any]) -> None:
    data = settings.model_dump(
        mode="json", include={"kafka", "topics", "classify", "aggregate", "models", "alerts"}
    )
    for name, section in sections.items():
        data[name] = {**data.get(name, {}), **section}
    path.write_text(yaml.safe_dump(data))


# the relay: detection's alerts → the notifier, in event-time groups ------------------------------
@dataclass
class Relay:
    """Reads the alerts topic; hands each event-time group to the notifier's topic, one at a time."""

    kafka: KafkaSettings
    source: str
    target: str
    notify_group: str
    width_ms: int
    raw: list[dict[str, Any]] = field(default_factory=list)
    groups: int = 0
    forwarded: int = 0
    expected: int | None = None  # set once detection is drained: how many alert records to read
    idle_s: float = 1.0

    async def run(self) -> None:
        reader = AIOKafkaConsumer(**self.kafka.client_kwargs(), group_id=None, enable_auto_commit=False)
        watcher = AIOKafkaConsumer(
            **self.kafka.client_kwargs(), group_id=self.notify_group, enable_auto_commit=False
        )
        producer = make_producer(self.kafka, linger_ms=2)
        await reader.start()
        await watcher.start()
        await producer.start()
        try:
            tps = [TopicPartition(self.source, p) for p in range(self.kafka.partitions)]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            open_group: list[dict[str, Any]] = []
            last_new = time.monotonic()
            while True:
                batch = await reader.getmany(timeout_ms=200, max_records=2_000)
                records = sorted(
                    (r for rs in batch.values() for r in rs), key=lambda r: (r.timestamp, r.offset)
                )
                for r in records:
                    if r.value is None:
                        continue
                    a = json.loads(r.value)
                    self.raw.append(a)
                    last_new = time.monotonic()
                    if open_group and not joins(open_group, a, self.width_ms):
                        await self._hand_over(producer, watcher, open_group)
                        open_group = []
                    open_group.append(a)
                done = self.expected is not None and len(self.raw) >= self.expected
                if open_group and (done or time.monotonic() - last_new >= self.idle_s):
                    await self._hand_over(producer, watcher, open_group)
                    open_group = []
                if done and not open_group:
                    return
        finally:
            await producer.stop()
            await watcher.stop()
            await reader.stop()

    async def _hand_over(self, producer: Any, watcher: AIOKafkaConsumer, group: list[dict[str, Any]]) -> None:
        futures = [
            await producer.send(
                self.target,
                json.dumps(a, ensure_ascii=False, separators=(",", ":")).encode(),
                key=str(a["fingerprint"]).encode(),
            )
            for a in group
        ]
        await producer.flush()
        targets: dict[TopicPartition, int] = {}
        for meta in await asyncio.gather(*futures):
            tp = TopicPartition(meta.topic, meta.partition)
            targets[tp] = max(targets.get(tp, 0), meta.offset + 1)
        deadline = time.monotonic() + 120
        while True:
            committed = {tp: (await watcher.committed(tp)) or 0 for tp in targets}
            if all(committed[tp] >= off for tp, off in targets.items()):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the notifier did not commit alerts {targets} within 120 s")
            await asyncio.sleep(0.02)
        self.groups += 1
        self.forwarded += len(group)


# the windows-topic tally: how many finals, and the last one ---------------------------------------
@dataclass
class WindowTally:
    kafka: KafkaSettings
    topic: str
    records: int = 0
    finals: int = 0
    last_final_end_ms: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(**self.kafka.client_kwargs(), group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(self.kafka.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            idle = 0
            while not (stop.is_set() and idle >= 3):
                batch = await consumer.getmany(timeout_ms=200, max_records=5_000)
                idle = 0 if batch else idle + 1
                for rs in batch.values():
                    for r in rs:
                        self.records += 1
                        if r.value is not None and b'"final":true' in r.value:
                            self.finals += 1
                            self.last_final_end_ms = max(self.last_final_end_ms, int(r.timestamp))
        finally:
            await consumer.stop()


# progress ----------------------------------------------------------------------------------------
class Progress:
    """A rich progress display on a terminal, else one line on stderr every 15 s."""

    def __init__(self, total: int) -> None:
        self.tty = sys.stderr.isatty()
        self._last = 0.0
        self._live: Any = None
        self.total = total
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._live = Progress(
                TextColumn("{task.description:<17}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[note]}"),
                console=Console(file=sys.stderr),
            )
            self._tasks = {
                name: self._live.add_task(name, total=total, note="")
                for name in ("classified", "aggregated", "alerts → notify")
            }
            self._live.start()

    def update(self, scored: float, aggregated: float, notes: str, relay: tuple[int, int]) -> None:
        if self._live is not None:
            self._live.update(self._tasks["classified"], completed=scored)
            self._live.update(self._tasks["aggregated"], completed=aggregated, note=notes)
            self._live.update(
                self._tasks["alerts → notify"], completed=relay[0], total=max(1, relay[1]), note=""
            )
            return
        now = time.monotonic()
        if now - self._last >= 15:
            self._last = now
            print(
                f"pages: scored {scored:.0f}/{self.total}, aggregated {aggregated:.0f}, {notes}, "
                f"alerts relayed {relay[0]}/{relay[1]}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


# the benchmark -----------------------------------------------------------------------------------
def _flush_record(last_ms: int, settings: Settings) -> ReplayRecord:
    longest = max(window_ms(w) for w in settings.alerts.windows)
    pad = longest + settings.aggregate.grace_ms + (settings.alerts.resolve_windows + 3) * longest
    at = last_ms + pad
    obj = {
        "id": FLUSH_ID,
        "text": "end of the replay",
        "source": FLUSH_ID,
        "published_at": datetime.fromtimestamp(at / 1000, UTC).isoformat(),
    }
    return ReplayRecord(FLUSH_ID.encode(), obj, None, at)


async def _until(
    cond: Any, timeout_s: float, what: str, stages: Sequence[StageProcess], tick: Any = None
) -> float:
    t0 = time.monotonic()
    while not cond():
        for s in stages:
            if s.proc.poll() is not None:
                raise SystemExit(f"{s.name} exited ({s.proc.returncode}):\n{s.log.read_text()[-3000:]}")
        if time.monotonic() - t0 > timeout_s:
            raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")
        if tick is not None:
            tick()
        await asyncio.sleep(0.5)
    return time.monotonic() - t0


async def _stable(read: Any, quiet_s: float, timeout_s: float) -> float:
    """Wait until ``read()`` has not changed for ``quiet_s``; returns its value."""
    t0 = time.monotonic()
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() - t0 < timeout_s:
        await asyncio.sleep(0.5)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return float(value)


async def _hand_over(
    upstream: float, stage: StageProcess, what: str, stages: Sequence[StageProcess], tick: Any, quiet_s: float
) -> float:
    """Wait until ``stage`` consumed the ``upstream`` records, then until its output stops growing."""
    consumed = "newswatch_stream_messages_consumed_total"
    await _until(lambda: stage.metric(consumed) >= upstream, 1800, what, stages, tick)
    return await _stable(lambda: stage.metric("newswatch_stream_messages_produced_total"), quiet_s, 120)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.monotonic()
    base = load_settings()
    records, duplicates = load_records(args.file, limit=args.limit)
    posts = [r for r in records if r.event_ms is not None]
    post_ms = sorted(int(r.event_ms) for r in posts if r.event_ms is not None)
    timings: dict[str, float] = {}
    from aiohttp import web

    received: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), json.loads(await request.read())))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    hook_url = f"http://127.0.0.1:{hook_port}/hook"

    with (
        tempfile.TemporaryDirectory(prefix="newswatch-pages-") as tmp,
        EmbeddedBroker(log_file=Path(tmp) / "tansu.log") as broker,
    ):
        workdir = Path(tmp)
        settings = _settings(base, broker.bootstrap_servers, workdir, args)
        flush = _flush_record(post_ms[-1], settings)
        overlap = max((d // st for d, st in settings.aggregate.hopping), default=1)
        if overlap > 5:
            print(
                f"pages: a hopping window puts each post in {overlap} windows per key: about {overlap}x "
                "the window records of tumbling_60000 (~0.5 M on the whole stream); expect a long run",
                file=sys.stderr,
            )
        notify = settings.notify
        await create_topics(settings.kafka, [*settings.topics.all(), PACED_TOPIC])
        pipeline_cfg = workdir / "pipeline.yaml"
        _write_config(settings, pipeline_cfg)
        notify_cfg = workdir / "notify.yaml"
        notify_section = notify.model_dump(
            mode="json", exclude={"webhook_urls", "webhook_secret", "sinks", "routes"}
        )
        notify_section.update(webhook_urls=[hook_url], sinks=[], routes=[], group_wait_s=args.notify_wait_s)
        _write_config(settings, notify_cfg, topics={"alerts": PACED_TOPIC}, notify=notify_section)
        with contextlib.ExitStack() as stack:
            classify = stack.enter_context(stage_process("classify", ["classify"], pipeline_cfg, workdir))
            aggregate = stack.enter_context(stage_process("aggregate", ["aggregate"], pipeline_cfg, workdir))
            detect = stack.enter_context(stage_process("detect", ["alerts", "run"], pipeline_cfg, workdir))
            notifier = stack.enter_context(stage_process("notify", ["notify"], notify_cfg, workdir))
            stages = [classify, aggregate, detect, notifier]
            try:
                for s in stages:
                    await _until(lambda s=s: s.ready(), 240, f"{s.name} to be ready", stages)
                timings["start_s"] = round(time.monotonic() - t0, 1)
                relay = Relay(
                    settings.kafka,
                    settings.topics.alerts,
                    PACED_TOPIC,
                    notify.group_id,
                    int(notify.group_wait_s * 1000),
                )
                relaying = asyncio.create_task(relay.run())
                tally_stop = asyncio.Event()
                tally = WindowTally(settings.kafka, settings.topics.windows)
                tallying = asyncio.create_task(tally.run(tally_stop))
                progress = Progress(len(posts) + 1)

                def tick() -> None:
                    if relaying.done() and relaying.exception() is not None:
                        raise relaying.exception()  # type: ignore[misc]
                    progress.update(
                        classify.metric("newswatch_stream_messages_consumed_total"),
                        aggregate.metric("newswatch_stream_messages_consumed_total"),
                        f"windows {tally.records:,}, alerts {len(relay.raw):,}, notified {len(received):,}",
                        (relay.forwarded, len(relay.raw)),
                    )

                try:
                    t = time.monotonic()
                    sender = asyncio.create_task(
                        replay([*posts, flush], settings.kafka, settings.topics.posts, speed=0)
                    )
                    while not sender.done():
                        tick()
                        await asyncio.sleep(0.5)
                    sent = (await sender).sent
                    timings["publish_s"] = round(time.monotonic() - t, 1)

                    def scored_or_dead() -> float:
                        return classify.metric("newswatch_stream_messages_produced_total") + classify.metric(
                            "newswatch_stream_dead_lettered_total"
                        )

                    await _until(lambda: scored_or_dead() >= sent, 3600, "classify", stages, tick)
                    timings["classified_s"] = round(time.monotonic() - t0, 1)
                    scored = classify.metric("newswatch_stream_messages_produced_total")
                    windows_out = await _hand_over(scored, aggregate, "the aggregator", stages, tick, 3.0)
                    timings["aggregated_s"] = round(time.monotonic() - t0, 1)
                    alerts_out = await _hand_over(windows_out, detect, "detection", stages, tick, 2.0)
                    timings["detected_s"] = round(time.monotonic() - t0, 1)
                    relay.expected = int(alerts_out)
                    await _until(relaying.done, 1800, "the relay to the notifier", stages, tick)
                    await relaying
                    await _stable(lambda: len(received), 2.0, 30)
                    timings["notified_s"] = round(time.monotonic() - t0, 1)
                    tally_stop.set()
                    await tallying
                    tick()
                finally:
                    progress.close()
                    if not relaying.done():
                        relaying.cancel()
                    tally_stop.set()
                    with contextlib.suppress(BaseException):
                        await asyncio.wait_for(tallying, 10)
                counts = {
                    "sent": len(posts),
                    "duplicates_dropped": duplicates,
                    "scored": scored - 1,  # the flush post
                    "dead_lettered": classify.metric("newswatch_stream_dead_lettered_total"),
                    "dead_letter_reasons": counter_by(
                        classify.port, "newswatch_stream_dead_lettered_total", "reason"
                    ),
                    "aggregated": aggregate.metric("newswatch_stream_messages_consumed_total") - 1,
                    "late": aggregate.metric("newswatch_stream_late_events_total"),
                    "aggregate_duplicates": aggregate.metric("newswatch_stream_duplicates_total"),
                    "aggregate_dead_lettered": aggregate.metric("newswatch_stream_dead_lettered_total"),
                }
                pipeline = {
                    "window_records": tally.records,
                    "final_windows": tally.finals,
                    "last_final_window_end": _iso(tally.last_final_end_ms)
                    if tally.last_final_end_ms
                    else None,
                    "last_post": _iso(post_ms[-1]),
                    "flush_post": _iso(int(flush.event_ms or 0)),
                    "detect_consumed": detect.metric("newswatch_stream_messages_consumed_total"),
                    "alert_events": alerts_out,
                    "suppressed": counter_by(detect.port, "newswatch_alerts_suppressed_total", "reason"),
                    "relay_groups": relay.groups,
                    "notify_deliveries": counter_by(
                        notifier.port, "newswatch_alerts_deliveries_total", "outcome"
                    ),
                }
            except BaseException:
                for s in stages:
                    print(f"--- {s.name} log ---\n{s.log.read_text()[-2000:]}", file=sys.stderr)
                raise
    await runner.cleanup()
    notifications = unique_notifications(received)
    report = analyse(relay.raw, notifications, post_ms, int(flush.event_ms or 0), top=args.top)
    timings["wall_s"] = round(time.monotonic() - t0, 1)
    a = settings.alerts
    run = {
        "benchmark": "pages",
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared), load {os.getloadavg()[0]:.2f}",
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "file": str(args.file),
        "limit": args.limit,
        "settings": {
            "model": {"dir": str(settings.models.dir or "shipped"), "variant": settings.models.variant},
            "windows": list(a.windows),
            "aggregator_windows": {
                "tumbling_ms": settings.aggregate.tumbling_ms,
                "hopping": [list(h) for h in settings.aggregate.hopping],
                "grace_ms": settings.aggregate.grace_ms,
            },
            "detector": a.detector,
            "detector_params": a.detector_params,
            "signals": list(a.signals),
            "kinds": list(a.kinds),
            "fire_score": a.fire_score,
            "fire_windows": a.fire_windows,
            "min_support": a.min_support,
            "warmup_windows": a.warmup_windows,
            "cooldown_s": a.cooldown_s,
            "notify_group_wait_s": notify.group_wait_s,
            "notifier_wait_s": args.notify_wait_s,
            "partitions": args.partitions,
        },
        "posts": counts,
        "pipeline": pipeline,
        "timings": timings,
    }
    if args.raw is not None:
        raw = {"run": run, "flush_ms": flush.event_ms, "alerts": relay.raw, "notifications": notifications}
        args.raw.write_text(json.dumps(raw, ensure_ascii=False) + "\n")
    return {**run, **report}


def reanalyse(args: argparse.Namespace) -> dict[str, Any]:
    """The report again from a ``--raw`` file (e.g. after a change to this analysis), no pipeline run."""
    raw = json.loads(args.reanalyse.read_text())
    run = raw["run"]
    records, _ = load_records(run["file"], limit=run["limit"])
    post_ms = sorted(int(r.event_ms) for r in records if r.event_ms is not None)
    return {
        **run,
        **analyse(raw["alerts"], raw["notifications"], post_ms, int(raw["flush_ms"]), top=args.top),
    }


def markdown(out: dict[str, Any]) -> str:
    """The figures as the Markdown tables of ``docs/benchmarks.md``."""
    n, al, sp, p = out["notifications"], out["alerts"], out["span"], out["posts"]
    lines = [
        f"Run {out['at']}, {out['machine']}; detector `{out['settings']['detector']}` on "
        f"{', '.join(out['settings']['windows'])}; {out['timings']['wall_s']:.0f} s wall.",
        "",
        "| | value |",
        "|---|---|",
        f"| posts sent / scored / dead-lettered / late | {p['sent']:,} / {p['scored']:,.0f} / "
        f"{p['dead_lettered']:,.0f} / {p['late']:,.0f} |",
        f"| span | {sp['first_post']} … {sp['last_post']}: {sp['days']} days, "
        f"{sp['days_with_posts']} with posts |",
        f"| **notifications per day** (all / with a firing alert) | **{n['per_day']['mean_per_day']}** / "
        f"{n['firing_per_day']['mean_per_day']} (target ≤ {n['budget_per_day']:g}) |",
        f"| per day with posts | {n['per_day']['mean_per_day_with_posts']} / "
        f"{n['firing_per_day']['mean_per_day_with_posts']} |",
        f"| notifications total (with firing, resolved only) | {n['total']:,} ({n['with_firing']:,}, "
        f"{n['resolved_only']:,}); {n['after_last_post']} after the last post |",
        f"| days with any / over budget / largest day | {n['per_day']['days_with_any']} / "
        f"{n['per_day']['days_over_budget']} / {n['per_day']['max_day']} |",
        f"| notifications by key kind (kinds of their alerts) | {_kv(n['by_kind'])} |",
        f"| incident notifications by the lead key's kind | {_kv(n.get('by_lead_kind', {}))} |",
        f"| alerts fired (firing transitions) | {al['firing']:,} "
        f"({al['firing_per_day']['mean_per_day']} per day); "
        f"by kind {_kv(al['firing_by_kind'])}; by signal {_kv(al['firing_by_signal'])} |",
        "",
        "Busiest days:",
        "",
        "| day | notifications | fired | posts | what fired |",
        "|---|---:|---:|---:|---|",
    ]
    for d in out["busiest_days"]:
        lines.append(
            f"| {d['day']} | {d['notifications']} | {d['alerts_fired']} | {d['posts']} | {_kv(d['fired'])} |"
        )
    lines += [
        "",
        f"Largest incidents ({out['incidents']['count']:,}, formed by {out['incidents']['source']}):",
        "",
        "| # | when (UTC) | alerts | posts | keys | signals | top posts |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for i, inc in enumerate(out["incidents"]["largest"], 1):
        texts = " · ".join(_cell(t["text"]) for t in inc["top_posts"])
        end = inc["end"][11:] if inc["end"][:10] == inc["start"][:10] else inc["end"]
        keys = _cell(
            ", ".join(inc["keys"][:6]) + (f" (+{len(inc['keys']) - 6})" if len(inc["keys"]) > 6 else "")
        )
        if inc.get("lead"):
            keys = f"lead {_cell(inc['lead'])}: {keys}"
        lines.append(
            f"| {i} | {inc['start']} → {end} | {inc['alerts']} | {inc['posts']} | {keys} "
            f"| {_kv(inc['signals'])} | {texts} |"
        )
    return "\n".join(lines) + "\n"


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{_cell(str(k))} {v}" for k, v in d.items()) or "–"


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="Replay file (CSV/JSONL).")
    p.add_argument("--limit", type=int, default=None, help="Replay only the first N posts (after dedupe).")
    p.add_argument("--partitions", type=int, default=1, help="Partitions per topic (1 keeps event order).")
    p.add_argument(
        "--all-windows", action="store_true", help="Keep every configured aggregator window shape."
    )
    p.add_argument(
        "--notify-wait-s",
        type=float,
        default=0.0,
        help="The notifier's own group_wait_s (wall clock; the relay does the event-time grouping).",
    )
    p.add_argument("--top", type=int, default=10, help="Busiest days and largest incidents listed.")
    p.add_argument("--out", type=Path, default=None, help="Also write the JSON result here.")
    p.add_argument("--md", type=Path, default=None, help="Also write the Markdown tables here.")
    p.add_argument("--raw", type=Path, default=None, help="Also write every alert and notification here.")
    p.add_argument(
        "--reanalyse", type=Path, default=None, metavar="RAW", help="Report from a --raw file; runs nothing."
    )
    p.add_argument("--json", action="store_true", help="Print one JSON line (else indented JSON).")
    return p.parse_args(argv)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the stages and broker on SIGTERM too
    arguments = parse_args()
    try:
        result = reanalyse(arguments) if arguments.reanalyse else asyncio.run(main(arguments))
    except KeyboardInterrupt:
        print("\npages: interrupted; stages and broker stopped", file=sys.stderr)
        sys.exit(130)
    if arguments.out:
        arguments.out.write_text(json.dumps(result, indent=2) + "\n")
    if arguments.md:
        arguments.md.write_text(markdown(result))
    print(json.dumps(result) if arguments.json else json.dumps(result, indent=2))
