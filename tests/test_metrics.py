"""Metric naming and bounded label cardinality."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from newswatch.metrics import Metrics


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
