"""Every Prometheus metric newswatch exports, defined in one place.

Names follow ``newswatch_<package>_<name>_<unit>``; counters end in ``_total``;
times are seconds. Labels come from closed sets (stage, reason, kind, sink,
outcome, severity). Entity labels are bounded by :class:`TopKGauge`, so the
number of series stays fixed whatever the input. Each component receives a
:class:`Metrics` built on a registry; tests build one on a fresh
``CollectorRegistry()`` and read it with ``registry.get_sample_value``.
Every metric is documented in ``docs/metrics.md``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = ["LABEL_MAX_CHARS", "LATENCY_BUCKETS_S", "Metrics", "TopKGauge", "label_value"]

#: Longest label value exported; longer keys (a source name is input) are cut to this.
LABEL_MAX_CHARS = 64


def label_value(value: str) -> str:
    """``value`` cut to :data:`LABEL_MAX_CHARS` (an ellipsis marks a cut)."""
    return value if len(value) <= LABEL_MAX_CHARS else value[: LABEL_MAX_CHARS - 1] + "…"


#: Buckets for publish-to-scored latency: 5 ms … 2 min.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_INFERENCE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class TopKGauge:
    """A labelled gauge that exports only the ``k`` keys with the most recent activity.

    Every update adds to a key's weight (for example its post count), and weights decay
    with a half-life of ``half_life_s``: a new ticker with 80 posts a minute outranks an
    established one at 10 within minutes, whatever their lifetime totals. Keys that fall
    out of the top ``k`` have their series removed, so at most ``k`` label values exist at
    any time. The weight table itself is bounded too: when it grows past ``capacity`` the
    lightest half is dropped (space-saving style).

    Weights are kept as ``log(sum(w_i * 2**(t_i / half_life)))``, which ranks keys as
    their decayed weights do at any common time, without touching every key as time passes.
    """

    def __init__(self, gauge: Gauge, k: int, capacity: int | None = None, half_life_s: float = 900.0) -> None:
        self._gauge = gauge
        self._k = k
        self._rate = math.log(2.0) / half_life_s
        self._capacity = capacity or max(1_000, 20 * k)
        self._weights: dict[tuple[str, ...], float] = {}
        self._exported: set[tuple[str, ...]] = set()
        self._min_key: tuple[str, ...] | None = None
        self._lock = threading.Lock()

    def set(
        self, labels: tuple[str, ...], value: float, weight: float = 1.0, now_s: float | None = None
    ) -> None:
        """Record ``value`` for ``labels`` and export it when the key is in the top ``k``.

        ``weight`` counts at time ``now_s`` (monotonic seconds by default). O(1) for a key
        that is already exported or lighter than the lightest exported one; O(k) when a key
        displaces another or the lightest exported key gets heavier (weights only grow, so the
        lightest key stays the lightest while others get heavier).
        """
        t = time.monotonic() if now_s is None else now_s
        added = math.log(max(weight, 1e-12)) + self._rate * t
        with self._lock:
            old = self._weights.get(labels)
            w = added if old is None else max(old, added) + math.log1p(math.exp(-abs(old - added)))
            self._weights[labels] = w
            if labels not in self._exported:
                if len(self._exported) >= self._k:
                    lightest = self._lightest()
                    if w <= self._weights[lightest]:
                        self._prune()
                        return
                    self._exported.discard(lightest)
                    self._gauge.remove(*lightest)
                self._exported.add(labels)
                self._min_key = None  # the new key may be the lightest now
            elif labels == self._min_key:
                self._min_key = None  # the lightest got heavier: another may be lightest now
            self._gauge.labels(*labels).set(value)
            self._prune()

    def _lightest(self) -> tuple[str, ...]:
        if self._min_key is None or self._min_key not in self._exported:
            self._min_key = min(self._exported, key=self._weights.__getitem__)
        return self._min_key

    def _prune(self) -> None:
        if len(self._weights) <= self._capacity:
            return
        ranked = sorted(self._weights.items(), key=lambda kv: kv[1], reverse=True)
        kept = dict(ranked[: self._capacity // 2])
        kept.update((key, self._weights[key]) for key in self._exported)
        self._weights = kept

    @property
    def exported(self) -> int:
        """How many label sets are exported now (at most ``k``)."""
        return len(self._exported)


class Metrics:
    """All metrics of one process, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None, top_k_entities: int = 50) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # stream
        self.consumed = Counter(
            "newswatch_stream_messages_consumed_total",
            "Messages read from Kafka (the aggregator counts posts: a pane record holds many).",
            ["stage"],
            registry=r,
        )
        self.produced = Counter(
            "newswatch_stream_messages_produced_total", "Messages written to Kafka.", ["stage"], registry=r
        )
        self.dead_lettered = Counter(
            "newswatch_stream_dead_lettered_total",
            "Messages sent to the dead-letter topic, by reason.",
            ["stage", "reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "newswatch_stream_batch_size",
            "Posts per scored batch.",
            ["stage"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.e2e_latency = Histogram(
            "newswatch_stream_e2e_latency_seconds",
            "Time from a post's publish (Kafka timestamp) to its scored event being acknowledged.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "newswatch_stream_consumer_lag_messages",
            "Messages between the consumer position and the partition's high-water mark.",
            ["stage", "topic", "partition"],
            registry=r,
        )
        self.late_events = Counter(
            "newswatch_stream_late_events_total",
            "Events older than the allowed lateness, counted but not added to closed windows.",
            ["stage"],
            registry=r,
        )
        self.duplicates = Counter(
            "newswatch_stream_duplicates_total",
            "Events ignored because their post id was already aggregated.",
            ["stage"],
            registry=r,
        )
        self.watermark = Gauge(
            "newswatch_stream_watermark_seconds",
            "The stage's event-time watermark as a Unix time: windows that end (plus the grace) "
            "before it are final; time() minus it is how far event time trails the wall clock.",
            ["stage"],
            registry=r,
        )
        self.in_flight_batches = Gauge(
            "newswatch_stream_in_flight_batches", "Batches being scored or produced.", ["stage"], registry=r
        )
        self.window_posts = Gauge(
            "newswatch_stream_window_posts",
            "Posts in the latest window, per kind (topic, entity, source, global) and key.",
            ["kind", "key", "window"],
            registry=r,
        )
        self.window_mean_sentiment = Gauge(
            "newswatch_stream_window_mean_sentiment",
            "Mean sentiment score in [-1, 1] in the latest window.",
            ["kind", "key", "window"],
            registry=r,
        )
        self.window_negative_share = Gauge(
            "newswatch_stream_window_negative_share",
            "Share of bearish posts in the latest window.",
            ["kind", "key", "window"],
            registry=r,
        )
        self.top_k_entities = top_k_entities
        self._window_topk = {
            name: TopKGauge(g, top_k_entities)
            for name, g in (
                ("posts", self.window_posts),
                ("mean", self.window_mean_sentiment),
                ("negative", self.window_negative_share),
            )
        }
        # models
        self.inference_seconds = Histogram(
            "newswatch_models_inference_seconds",
            "Engine time per batch (tokenize + forward + post-process).",
            ["backend"],
            buckets=_INFERENCE_BUCKETS_S,
            registry=r,
        )
        self.model_info = Info("newswatch_models", "Loaded model version, backend and variant.", registry=r)
        # alerts
        self.alerts_fired = Counter(
            "newswatch_alerts_fired_total", "Alerts that started firing.", ["severity"], registry=r
        )
        self.alerts_resolved = Counter(
            "newswatch_alerts_resolved_total", "Alerts that resolved.", ["severity"], registry=r
        )
        self.alerts_suppressed = Counter(
            "newswatch_alerts_suppressed_total",
            "Alert candidates suppressed, by reason (support, warmup, cooldown, rate_cap).",
            ["reason"],
            registry=r,
        )
        self.alerts_open = Gauge(
            "newswatch_alerts_open",
            "1 for every series with a firing alert (removed when it resolves), by kind, key, window "
            "and signal: the keys the dashboard must show whatever the top-K exports.",
            ["kind", "key", "window", "signal"],
            registry=r,
        )
        self.deliveries = Counter(
            "newswatch_alerts_deliveries_total",
            "Delivery attempts, by sink and outcome (ok, retry, failed, dead_letter, duplicate).",
            ["sink", "outcome"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "newswatch_alerts_delivery_seconds", "Time per delivery attempt.", ["sink"], registry=r
        )

    def set_window(
        self,
        kind: str,
        key: str,
        window: str,
        posts: int,
        mean_sentiment: float,
        negative_share: float,
        now_s: float | None = None,
    ) -> None:
        """Export the latest window values; entity and source keys go through the bounded top-K.

        Keys are cut to :data:`LABEL_MAX_CHARS` characters; ``now_s`` (monotonic seconds by
        default) dates the activity that ranks entity and source keys.
        """
        labels = (kind, label_value(key), window)
        if kind in ("entity", "source"):
            self._window_topk["posts"].set(labels, posts, weight=posts, now_s=now_s)
            self._window_topk["mean"].set(labels, mean_sentiment, weight=posts, now_s=now_s)
            self._window_topk["negative"].set(labels, negative_share, weight=posts, now_s=now_s)
            return
        self.window_posts.labels(*labels).set(posts)
        self.window_mean_sentiment.labels(*labels).set(mean_sentiment)
        self.window_negative_share.labels(*labels).set(negative_share)

    def set_alert_open(self, kind: str, key: str, window: str, signal: str, open_: bool) -> None:
        """Mark a series as having a firing alert (``open_``) or not; keys are cut like window keys."""
        labels = (kind, label_value(key), window, signal)
        if open_:
            self.alerts_open.labels(*labels).set(1)
        else:
            with contextlib.suppress(KeyError):
                self.alerts_open.remove(*labels)

    def series_count(self, names: Iterable[str] | None = None) -> int:
        """Number of exported samples (for cardinality tests)."""
        wanted = set(names) if names is not None else None
        n = 0
        for family in self.registry.collect():
            if wanted is None or family.name in wanted:
                n += len(family.samples)
        return n
