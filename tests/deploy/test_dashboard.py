"""The Grafana dashboard against a real Prometheus scraping real newswatch stages.

A module fixture starts the classify and aggregate stages (``newswatch classify``,
``newswatch aggregate``) against the session's embedded broker, publishes real StockNet
tweets plus malformed input, and runs Debian's ``prometheus`` scraping the stages'
``/metrics`` every second. Then every panel's PromQL must parse and return data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from newswatch.stream.broker import EmbeddedBroker

from .dashboard import PanelQuery, load, panel_queries
from .pipeline import Stage, StageEnv, cli_commands, malformed_posts, real_posts, send_posts
from .prometheus import PrometheusServer, QueryError, Target

pytestmark = pytest.mark.slow

QUERIES = panel_queries()


def _ids(q: PanelQuery) -> str:
    return f"{q.panel}/{q.ref}"


@pytest.fixture(scope="module")
def prometheus(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """Prometheus scraping a running classify + aggregate pipeline that has seen traffic."""
    workdir = tmp_path_factory.mktemp("dashboard")
    env = StageEnv(
        bootstrap=broker.bootstrap_servers, unique=workdir.name.replace("_", "")[-12:], workdir=workdir
    )
    env.create_topics()
    commands = cli_commands()
    stages = [Stage("classify", ["--log-level", "WARNING", "classify"], env)]
    if "aggregate" in commands:
        stages.append(Stage("aggregate", ["--log-level", "WARNING", "aggregate"], env))
    else:  # the same command, run by its own module until the CLI registers it
        stages.append(Stage("aggregate", [], env, module="newswatch.stream.aggregate_cli"))
    try:
        for stage in stages:
            stage.start()
        for stage in stages:
            stage.wait_ready(timeout_s=120)
        send_posts(env.kafka, env.topics["POSTS"], real_posts(60) + malformed_posts())
        prom = PrometheusServer([Target(s.address, s.name) for s in stages], Path(workdir))
        with prom:
            yield prom
    finally:
        for stage in stages:
            stage.stop()


def _wait_for_data(prom: PrometheusServer, queries: list[PanelQuery], timeout_s: float) -> list[str]:
    """Poll until every query returns a sample; return those that never did."""
    pending = list(queries)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        pending = [q for q in pending if not prom.query(q.expr)]
        if pending:
            time.sleep(1.0)
    return [f"{_ids(q)}: {q.expr}" for q in pending]


def test_dashboard_uses_the_current_grafana_schema() -> None:
    dash = load()
    assert dash["schemaVersion"] >= 39
    assert dash["uid"] == "newswatch"
    types = {p["type"] for p in dash["panels"]}
    assert "graph" not in types  # the removed Angular panel
    assert {"timeseries", "stat", "bargauge", "table", "row"} >= types
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("throughput", "lag", "latency", "dead-lettered", "sentiment", "negative entities"):
        assert topic in titles
    assert "alerts timeline" in titles and "gpu utilisation" in titles
    for q in QUERIES:
        assert "job=" in q.expr or q.needs_dcgm, q


def test_every_stage_is_scraped(prometheus: PrometheusServer) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = prometheus.targets_health()
        if health and all(h == "up" for h in health.values()):
            break
        time.sleep(0.5)
    assert health == {"classify": "up", "aggregate": "up"}


@pytest.mark.parametrize("query", QUERIES, ids=_ids)
def test_panel_query_is_valid_promql(prometheus: PrometheusServer, query: PanelQuery) -> None:
    prometheus.query(query.expr)  # raises QueryError on a parse or evaluation error
    if not query.instant:
        prometheus.query_range(query.expr, seconds=60)


def test_prometheus_rejects_invalid_promql(prometheus: PrometheusServer) -> None:
    with pytest.raises(QueryError, match="bad_data"):
        prometheus.query("sum(rate(newswatch_stream_messages_consumed_total[5m])")


def test_every_panel_returns_data(prometheus: PrometheusServer) -> None:
    """Every panel except the DCGM (GPU exporter) ones has data from the running stages."""
    wanted = [q for q in QUERIES if not q.needs_dcgm]
    assert len(wanted) >= 15
    missing = _wait_for_data(prometheus, wanted, timeout_s=120)
    assert missing == []


def test_gpu_panels_are_the_only_optional_ones() -> None:
    optional = {q.panel for q in QUERIES if q.needs_dcgm}
    assert optional == {"GPU utilisation", "GPU memory used"}
