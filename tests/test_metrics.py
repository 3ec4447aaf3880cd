"""Metric naming and bounded label cardinality."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from newswatch.metrics import LABEL_MAX_CHARS, Metrics


def test_every_metric_is_prefixed_by_package() -> None:
    m = Metrics(CollectorRegistry())
    names = {family.name for family in m.registry.collect()}
    assert names
    for name in names:
        assert name.startswith(("newswatch_stream_", "newswatch_models", "newswatch_alerts_")), name


def test_entity_series_stay_bounded_with_100k_distinct_tickers() -> None:
    m = Metrics(CollectorRegistry(), top_k_entities=25)
    for i in range(100_000):
        m.set_window(
            "entity", f"$T{i}", "hopping_300000_60000", posts=1, mean_sentiment=0.0, negative_share=0.0
        )
    # The heavy hitters still make it into the exported set.
    for _ in range(50):
        m.set_window(
            "entity", "$AAPL", "hopping_300000_60000", posts=40, mean_sentiment=-0.5, negative_share=0.7
        )
    per_gauge = {
        name: m.series_count([name])
        for name in (
            "newswatch_stream_window_posts",
            "newswatch_stream_window_mean_sentiment",
            "newswatch_stream_window_negative_share",
        )
    }
    assert all(0 < n <= 25 for n in per_gauge.values()), per_gauge
    value = m.registry.get_sample_value(
        "newswatch_stream_window_negative_share",
        {"kind": "entity", "key": "$AAPL", "window": "hopping_300000_60000"},
    )
    assert value == 0.7


def test_topic_series_are_exported_directly() -> None:
    m = Metrics(CollectorRegistry())
    m.set_window("topic", "Earnings", "tumbling_60000", posts=12, mean_sentiment=0.25, negative_share=0.1)
    labels = {"kind": "topic", "key": "Earnings", "window": "tumbling_60000"}
    assert m.registry.get_sample_value("newswatch_stream_window_posts", labels) == 12


def test_a_new_surge_is_exported_among_busier_established_keys() -> None:
    """Ranked by recent activity: 60 tickers at 10 posts a minute for two hours, then a new
    one at 80 a minute is exported within minutes (by lifetime posts it never would be)."""
    m = Metrics(CollectorRegistry(), top_k_entities=50)
    window = "tumbling_60000"
    for minute in range(120):
        for i in range(60):
            m.set_window("entity", f"$OLD{i}", window, 10, 0.1, 0.1, now_s=minute * 60.0)
    labels = {"kind": "entity", "key": "$NEW", "window": window}
    exported_at = None
    for minute in range(120, 130):
        m.set_window("entity", "$NEW", window, 80, -0.8, 0.9, now_s=minute * 60.0)
        for i in range(60):
            m.set_window("entity", f"$OLD{i}", window, 10, 0.1, 0.1, now_s=minute * 60.0)
        if m.registry.get_sample_value("newswatch_stream_window_negative_share", labels) is not None:
            exported_at = minute - 120
            break
    assert exported_at is not None and exported_at <= 5, exported_at
    assert m.series_count(["newswatch_stream_window_posts"]) <= 50


def test_label_values_are_cut_so_huge_sources_cannot_grow_metrics() -> None:
    """F7: three posts with a 900,000-character source grew /metrics to 24 MB."""
    m = Metrics(CollectorRegistry())
    before = len(generate_latest(m.registry))
    for i in range(3):
        m.set_window("source", f"{i}" + "s" * 900_000, "tumbling_60000", 1, -1.0, 1.0)
    grown = len(generate_latest(m.registry)) - before
    assert grown < 3 * 3 * 400, grown  # three keys in three gauges, each line a few hundred bytes
    keys = {
        s.labels["key"]
        for f in m.registry.collect()
        if f.name == "newswatch_stream_window_posts"
        for s in f.samples
    }
    assert len(keys) == 3 and all(len(k) == LABEL_MAX_CHARS for k in keys)
