"""The Grafana dashboard against a real Prometheus scraping real newswatch stages.

A module fixture starts every stage as its real command (``newswatch classify``,
``aggregate``, ``alerts run``, ``notify``) against the session's embedded broker, with a
loopback webhook receiver as the notifier's sink. It publishes real StockNet tweets plus
malformed input to the posts topic, and a window history with a volume surge to the
windows topic (so an alert fires, resolves and is delivered within the test), then runs
Debian's ``prometheus`` scraping the stages' ``/metrics`` every second. Every panel's
PromQL must parse and return data.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from newswatch.demo.broker import EmbeddedBroker

from .chart import CHART, load_values, render
from .dashboard import PanelQuery, load, panel_queries
from .pipeline import (
    Stage,
    StageEnv,
    WebhookReceiver,
    cli_commands,
    malformed_posts,
    real_posts,
    send_posts,
    send_records,
    surge_windows,
)
from .prometheus import PrometheusServer, QueryError, Target

pytestmark = pytest.mark.slow

QUERIES = panel_queries()
RULES = CHART / "rules" / "newswatch.rules.yaml"


def _ids(q: PanelQuery) -> str:
    return f"{q.panel}/{q.ref}"


@pytest.fixture(scope="module")
def prometheus(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """Prometheus scraping the whole pipeline (classify, aggregate, alerts run, notify) after traffic."""
    workdir = tmp_path_factory.mktemp("dashboard")
    with WebhookReceiver() as receiver:
        env = StageEnv(
            bootstrap=broker.bootstrap_servers,
            unique=workdir.name.replace("_", "")[-12:],
            workdir=workdir,
            extra={
                "NEWSWATCH_NOTIFY_WEBHOOK_URLS": json.dumps([receiver.url]),
                "NEWSWATCH_NOTIFY_WEBHOOK_SECRET": "whsec_"
                + base64.b64encode(b"dashboard-test-key-24b!").decode(),
            },
        )
        env.create_topics()
        commands = cli_commands()
        stages = [Stage("classify", ["--log-level", "WARNING", "classify"], env)]
        if "aggregate" in commands:
            stages.append(Stage("aggregate", ["--log-level", "WARNING", "aggregate"], env))
        else:  # the same command, run by its own module until the CLI registers it
            stages.append(Stage("aggregate", [], env, module="newswatch.cli.aggregate"))
        stages.append(Stage("alerts-run", ["--log-level", "WARNING", "alerts", "run"], env))
        stages.append(Stage("notify", ["--log-level", "WARNING", "notify"], env))
        try:
            for stage in stages:
                stage.start()
            for stage in stages:
                stage.wait_ready(timeout_s=120)
            send_posts(env.kafka, env.topics["POSTS"], real_posts(60) + malformed_posts())
            # a window history with a surge, in the aggregator's format: the detection stage fires
            # and resolves an alert, the notifier delivers both to the loopback webhook
            send_records(env.kafka, env.topics["WINDOWS"], surge_windows("Dashboard test"))
            prom = PrometheusServer(
                [Target(s.address, s.name) for s in stages], Path(workdir), rule_files=[RULES]
            )
            with prom:
                yield prom
        finally:
            for stage in stages:
                stage.terminate()
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
    assert health == {"classify": "up", "aggregate": "up", "alerts-run": "up", "notify": "up"}


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


def test_the_pipeline_really_ran(prometheus: PrometheusServer) -> None:
    """The data behind the panels comes from real work: scored posts, dead letters, an alert
    that fired and resolved, and webhook deliveries the loopback receiver acknowledged."""
    checks = {
        'sum(newswatch_stream_messages_produced_total{stage="classify"})': 60,
        "sum(newswatch_stream_dead_lettered_total)": 2,
        "sum(newswatch_alerts_fired_total)": 1,
        "sum(newswatch_alerts_resolved_total)": 1,
        'sum(newswatch_alerts_deliveries_total{outcome="ok"})': 2,
    }
    deadline = time.monotonic() + 60
    values: dict[str, float] = {}
    while time.monotonic() < deadline:
        values = {q: float(r[0]["value"][1]) if (r := prometheus.query(q)) else 0.0 for q in checks}
        if all(values[q] >= n for q, n in checks.items()):
            break
        time.sleep(1)
    assert {q: v for q, v in values.items() if v < checks[q]} == {}


def test_helm_test_hook_passes_against_the_running_stages(prometheus: PrometheusServer) -> None:
    """The chart's `helm test` script, pointed at the live stages instead of their Services."""
    pod = next(o.obj for o in render(load_values("gpu")) if o.kind == "Pod")
    script = pod["spec"]["containers"][0]["args"][0]
    addresses = [t.address for t in prometheus.targets]
    script, n = re.subn(r"^targets = .*$", f"targets = {json.dumps(addresses)}", script, flags=re.M)
    assert n == 1
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok http://") == 2 * len(addresses)


def test_rules_evaluate_cleanly_on_live_data(prometheus: PrometheusServer) -> None:
    """The PrometheusRule's rules, loaded into the same Prometheus, evaluate without error;
    the recording rules produce series and the no-metrics alert stays quiet."""
    deadline = time.monotonic() + 90
    rules: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rules = prometheus.rules()
        evaluated = all(r.get("lastEvaluation", "").startswith("2") for r in rules)
        if rules and evaluated and prometheus.query("newswatch:stream_messages_consumed:rate5m"):
            break
        time.sleep(1)
    assert len(rules) == 12
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    assert prometheus.query('newswatch:stream_messages_consumed:rate5m{stage="classify"}')
    assert prometheus.query("newswatch:stream_consumer_lag_messages:sum")
    absent = next(r for r in rules if r["name"] == "NewswatchMetricsAbsent")
    assert absent["state"] == "inactive"
