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
from newswatch.settings.alerts import AlertSettings
from tests.support.aggregate import surge_windows
from tests.support.chart import CHART, load_values, render
from tests.support.kafka import send_posts, send_records
from tests.support.receivers import Receiver

from .dashboard import (
    PanelQuery,
    datasource_refs,
    grafana_import,
    label_values_query,
    link_variables,
    load,
    panel_queries,
    prometheus_annotations,
    variables,
)
from .pipeline import Stage, StageEnv, cli_commands, malformed_posts, real_posts
from .prometheus import PrometheusServer, QueryError, Target

pytestmark = pytest.mark.slow

#: Every real post counts for its source, "stocknet": that key has window gauges, and the fixture
#: gives it a volume surge in its last windows, so its alert is open while the tests run. The
#: panels of the selected-key row are queried with it.
SELECTED = {"$kind": "source", "$key": "stocknet"}
#: An entity with an open alert and no posts: only newswatch_alerts_open has it (as for a key
#: outside the window gauges' top-K, or one they no longer export).
ALERT_ONLY = {"$kind": "entity", "$key": "$DASHTEST"}
QUERIES = panel_queries(values=SELECTED)
RULES = CHART / "rules" / "newswatch.rules.yaml"


_WEBHOOK: list[Any] = []  # the fixture's loopback webhook receiver


def _ids(q: PanelQuery) -> str:
    return f"{q.panel}/{q.ref}"


def _open_surge(kind: str, key: str) -> list[tuple[bytes, bytes, int]]:
    """surge_windows' steady history and surge for ``(kind, key)`` without the calm after it:
    the detection stage fires, and no cool window follows to resolve the alert."""
    out = []
    for _, value, ts in surge_windows(key, after=0):
        stat = json.loads(value)
        stat["kind"] = kind
        out.append((f"{kind}:{key}:{stat['window']}".encode(), json.dumps(stat).encode(), ts))
    return out


@pytest.fixture(scope="module")
def prometheus(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """Prometheus scraping the whole pipeline (classify, aggregate, alerts run, notify) after traffic."""
    workdir = tmp_path_factory.mktemp("dashboard")
    with Receiver().threaded() as receiver:
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
            # surges whose alerts stay open (for the selected-key row, the key variable and the
            # annotations), sent before the posts: the detector learns the history first
            for v in (SELECTED, ALERT_ONLY):
                send_records(env.kafka, env.topics["WINDOWS"], _open_surge(v["$kind"], v["$key"]))
            send_posts(env.kafka, env.topics["POSTS"], real_posts(60) + malformed_posts())
            # a window history with a surge, in the aggregator's format: the detection stage fires
            # and resolves an alert, the notifier delivers both to the loopback webhook
            send_records(env.kafka, env.topics["WINDOWS"], surge_windows("Dashboard test"))
            _WEBHOOK[:] = [receiver]
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
    assert len(rules) == 13
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    assert prometheus.query('newswatch:stream_messages_consumed:rate5m{stage="classify"}')
    assert prometheus.query("newswatch:stream_consumer_lag_messages:sum")
    absent = next(r for r in rules if r["name"] == "NewswatchMetricsAbsent")
    assert absent["state"] == "inactive"


# --- the selected key: what an alert's "Open dashboard" link opens -------------------------------

#: the panels that show one key (their queries read $key)
KEY_PANELS = sorted({q.panel for q in panel_queries() if "$key" in q.expr})


def _label_values(prom: PrometheusServer, variable: str, values: dict[str, str]) -> list[str]:
    """What Grafana lists for a label_values(selector, label) variable (the label values API with match[])."""
    selector, label = label_values_query(variables()[variable], values)
    result: list[str] = prom.api(f"/api/v1/label/{label}/values", **{"match[]": selector})
    return result


def _firing_links(timeout_s: float) -> dict[tuple[str, str], str]:
    """``(kind, key) -> dashboard_url`` of the firing alerts the notifier delivered to the webhook,
    once the selected and the alert-only key both have one."""
    wanted = {(v["$kind"], v["$key"]) for v in (SELECTED, ALERT_ONLY)}
    links: dict[tuple[str, str], str] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for body in list(_WEBHOOK[0].received):
            payload = json.loads(body)
            for a in payload.get("alerts", []):
                if a.get("status", payload.get("status")) == "firing":
                    links.setdefault((a["kind"], a["key"]), a["dashboard_url"])
        if wanted <= links.keys():
            break
        time.sleep(1)
    return links


def test_the_alert_link_sets_only_dashboard_variables() -> None:
    """Every var-* of the default alerts.dashboard_url_template is a variable of the dashboard,
    and the link's time range is the dashboard's (from/to)."""
    template = AlertSettings().dashboard_url_template
    fields = {"kind": "entity", "signal": "volume", "window": "tumbling_60000", "fingerprint": "f"}
    url = template.format(key="%24NVDA", start_ms=1, end_ms=2, **fields)
    linked = link_variables(url)
    assert set(linked) == {"$kind", "$key", "$window"}
    assert {name[1:] for name in linked} <= set(variables())
    assert "from=1" in url and "to=2" in url and "/d/newswatch" in url  # the dashboard's uid
    assert linked["$key"] == "$NVDA"


def test_kind_and_key_variables_take_any_key() -> None:
    """One key at a time (no "All"), typed in or from a link even when no series has it (yet),
    listed from the window gauges and from the open alerts."""
    v = variables()
    for name in ("kind", "key"):
        assert v[name]["type"] == "query"
        assert v[name]["includeAll"] is False and v[name]["multi"] is False
        assert v[name]["allowCustomValue"] is True
        selector, label = label_values_query(v[name])
        assert label == name
        assert "newswatch_stream_window_posts" in selector and "newswatch_alerts_open" in selector
    assert 'kind="$kind"' in label_values_query(v["key"])[0]
    assert len(KEY_PANELS) == 4, KEY_PANELS
    row = next(p for p in load()["panels"] if p["type"] == "row" and "$key" in p["title"])
    assert row["gridPos"]["y"] == 0  # a link lands on it


def test_import_asks_for_the_data_source_and_the_sidecar_needs_none() -> None:
    """Import (Dashboards -> Import) prompts for DS_PROMETHEUS and selects it in the datasource
    variable; every query reads that variable, so the sidecar's ConfigMap (no import step) works."""
    dash = load()
    assert dash["__inputs"] == [
        {
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": dash["__inputs"][0]["description"],
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    required = {(r["type"], r["id"]) for r in dash["__requires"]}
    panel_types = {p["type"] for p in dash["panels"] if p["type"] != "row"}
    wanted = {("grafana", "grafana"), ("datasource", "prometheus")} | {("panel", t) for t in panel_types}
    assert wanted <= required
    builtin = {"type": "grafana", "uid": "-- Grafana --"}
    refs = [r for r in datasource_refs(dash) if r != builtin]
    assert refs and all(r == {"type": "prometheus", "uid": "${datasource}"} for r in refs)
    text = json.dumps(dash)
    assert text.count("${DS_PROMETHEUS}") == 2  # the datasource variable's current text and value

    imported = grafana_import(dash, {"DS_PROMETHEUS": "prom-uid-1"})
    assert "__inputs" not in imported and "${DS_" not in json.dumps(imported)
    ds = variables(imported)["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == "prom-uid-1"
    assert variables(dash)["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"


def test_every_variable_reference_is_defined() -> None:
    """$name in any query, title or annotation is a dashboard variable or a Grafana built-in."""
    dash = load()
    names = set(variables())
    texts = [q.expr for q in panel_queries(values={})] + [p["title"] for p in dash["panels"]]
    texts += [a["expr"] for a in prometheus_annotations()]
    texts += [label_values_query(v, {})[0] for v in variables().values() if v["type"] == "query"]
    used = {m for t in texts for m in re.findall(r"\$\{?(\w+)", t)}
    assert {u for u in used if not u.startswith("__")} <= names


def test_key_variable_lists_keys_with_posts_and_keys_with_open_alerts(prometheus: PrometheusServer) -> None:
    deadline = time.monotonic() + 120
    got: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        got = {
            "kinds": _label_values(prometheus, "kind", {}),
            "source": _label_values(prometheus, "key", {"$kind": "source"}),
            "entity": _label_values(prometheus, "key", {"$kind": "entity"}),
        }
        if (
            {"source", "entity", "topic"} <= set(got["kinds"])
            and SELECTED["$key"] in got["source"]
            and ALERT_ONLY["$key"] in got["entity"]
        ):
            break
        time.sleep(1)
    assert {"source", "entity", "topic"} <= set(got["kinds"]), got
    assert SELECTED["$key"] in got["source"], got  # posts and an open alert
    assert ALERT_ONLY["$key"] in got["entity"], got  # an open alert only
    assert SELECTED["$key"] not in got["entity"]  # the key list follows the kind


def test_the_alert_link_opens_the_key_with_data(prometheus: PrometheusServer) -> None:
    """The link of a delivered firing alert, its var-* put in as Grafana would: every panel of
    the selected-key row returns series for a key with posts; for a key with only an open
    alert, the open-alerts panel does."""
    links = _firing_links(timeout_s=120)
    selected, alert_only = (links.get((v["$kind"], v["$key"])) for v in (SELECTED, ALERT_ONLY))
    assert selected and alert_only, links
    values = link_variables(selected)
    assert {n[1:] for n in values} <= set(variables()), selected
    assert values["$kind"] == "source" and values["$key"] == "stocknet", selected
    queries = [q for q in panel_queries(values=values) if q.panel in KEY_PANELS]
    assert len(queries) == 4
    assert _wait_for_data(prometheus, queries, timeout_s=120) == []

    values = link_variables(alert_only)
    assert values["$key"] == "$DASHTEST"
    open_alerts = [q for q in panel_queries(values=values) if "newswatch_alerts_open" in q.expr]
    assert len(open_alerts) == 1
    assert _wait_for_data(prometheus, open_alerts, timeout_s=60) == []
    assert prometheus.query_range(open_alerts[0].expr, seconds=60)


def test_alerts_are_annotations(prometheus: PrometheusServer) -> None:
    """The annotation query, run over a range as Grafana does, returns a series per open alert
    with every label its title, text and tags use."""
    (annotation,) = prometheus_annotations()
    assert annotation["enable"] is True and annotation["datasource"]["uid"] == "${datasource}"
    assert "{{key}}" in annotation["titleFormat"] and "{{signal}}" in annotation["titleFormat"]
    expr = panel_queries(
        {"panels": [{"type": "timeseries", "title": "annotation", "targets": [{"refId": "A", **annotation}]}]}
    )[0].expr
    deadline = time.monotonic() + 120
    series: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        series = prometheus.query_range(expr, seconds=120)
        if {(s["metric"].get("kind"), s["metric"].get("key")) for s in series} >= {
            ("source", "stocknet"),
            ("entity", "$DASHTEST"),
        }:
            break
        time.sleep(1)
    keys = {(s["metric"].get("kind"), s["metric"].get("key")) for s in series}
    assert {("source", "stocknet"), ("entity", "$DASHTEST")} <= keys, series
    used = set(re.findall(r"\{\{(\w+)\}\}", annotation["titleFormat"] + annotation["textFormat"]))
    used |= set(annotation["tagKeys"].split(","))
    for s in series:
        assert used <= set(s["metric"]), s["metric"]
        assert all(float(v) == 1 for _, v in s["values"])
