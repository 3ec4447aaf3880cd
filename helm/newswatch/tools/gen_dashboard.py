"""Generates dashboards/newswatch.json (Grafana schema 39) from the panel list below.

Run from anywhere: python helm/newswatch/tools/gen_dashboard.py
"""
from pathlib import Path

CHART = Path(__file__).resolve().parents[1]
import json
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job="newswatch", namespace=~"$namespace"'
panels = []
pid = [0]
def panel(title, type_, targets, x, y, w=12, h=8, unit=None, desc="", extra=None, legend=True):
    pid[0] += 1
    p = {
        "id": pid[0], "type": type_, "title": title, "description": desc, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            {"refId": chr(65 + i), "datasource": DS, "expr": e, "legendFormat": lf, "range": True, "instant": False, "editorMode": "code"}
            for i, (e, lf) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit or "short"}, "overrides": []},
        "options": {},
    }
    if type_ == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": False}
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": legend}, "tooltip": {"mode": "multi", "sort": "desc"}}
    if extra:
        for k, v in extra.items():
            p[k] = v
    panels.append(p)
    return p
def row(title, y):
    pid[0] += 1
    panels.append({"id": pid[0], "type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})

row("Pipeline", 0)
panel("Workers up", "stat", [(f'sum by (component) (up{{{SEL}}})', "{{component}}")], 0, 1, w=6, h=4,
      desc="Scraped stage processes per component (ServiceMonitor job=newswatch).",
      extra={"options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value", "graphMode": "none", "textMode": "auto", "orientation": "auto", "justifyMode": "auto"}})
panel("Model", "table", [(f'max by (version, backend) (newswatch_models_info{{{SEL}}})', "")], 6, 1, w=18, h=4,
      desc="Model version and backend loaded by the classify workers (newswatch_models_info).",
      extra={"targets": None})
panel("Throughput (messages/s)", "timeseries", [
    (f'sum by (stage) (rate(newswatch_stream_messages_consumed_total{{{SEL}}}[$__rate_interval]))', "{{stage}} consumed"),
    (f'sum by (stage) (rate(newswatch_stream_messages_produced_total{{{SEL}}}[$__rate_interval]))', "{{stage}} produced"),
], 0, 5, unit="reqps", desc="Messages read from and written to Kafka per stage.")
panel("Consumer lag (messages)", "timeseries", [
    (f'sum by (stage, topic) (newswatch_stream_consumer_lag_messages{{{SEL}}})', "{{stage}} {{topic}}"),
], 12, 5, desc="Messages between each consumer group's position and the high-water mark, summed over partitions. Growing lag means too few workers (docs/scaling.md).")
panel("End-to-end latency (publish to scored)", "timeseries", [
    (f'histogram_quantile(0.5, sum by (le) (rate(newswatch_stream_e2e_latency_seconds_bucket{{{SEL}}}[$__rate_interval])))', "p50"),
    (f'histogram_quantile(0.99, sum by (le) (rate(newswatch_stream_e2e_latency_seconds_bucket{{{SEL}}}[$__rate_interval])))', "p99"),
], 0, 13, unit="s", desc="Time from a post's Kafka timestamp to its scored event being acknowledged.")
panel("Dead-lettered (messages/s) by reason", "timeseries", [
    (f'sum by (stage, reason) (rate(newswatch_stream_dead_lettered_total{{{SEL}}}[$__rate_interval]))', "{{stage}} {{reason}}"),
], 12, 13, unit="reqps", desc="Rejected input sent to the dead-letter topic, by stage and reason.")
panel("Inference time per batch (p50 / p99)", "timeseries", [
    (f'histogram_quantile(0.5, sum by (le, backend) (rate(newswatch_models_inference_seconds_bucket{{{SEL}}}[$__rate_interval])))', "p50 {{backend}}"),
    (f'histogram_quantile(0.99, sum by (le, backend) (rate(newswatch_models_inference_seconds_bucket{{{SEL}}}[$__rate_interval])))', "p99 {{backend}}"),
], 0, 21, unit="s", desc="Engine time per batch: tokenize, forward pass, post-processing.")
panel("Mean batch size", "timeseries", [
    (f'sum by (stage) (rate(newswatch_stream_batch_size_sum{{{SEL}}}[$__rate_interval])) / sum by (stage) (rate(newswatch_stream_batch_size_count{{{SEL}}}[$__rate_interval]))', "{{stage}}"),
], 12, 21, desc="Posts per scored batch; close to classify.batch_size means the workers are saturated.")
row("Market signals", 29)
panel("Mean sentiment by topic", "timeseries", [
    (f'avg by (key) (newswatch_stream_window_mean_sentiment{{{SEL}, kind="topic", window=~"$window"}})', "{{key}}"),
], 0, 30, desc="Mean sentiment score in [-1, 1] per topic in the latest window.", extra={"fieldConfig": {"defaults": {"unit": "short", "min": -1, "max": 1, "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0, "showPoints": "never", "spanNulls": False}}, "overrides": []}})
panel("Posts per window by topic", "timeseries", [
    (f'sum by (key) (newswatch_stream_window_posts{{{SEL}, kind="topic", window=~"$window"}})', "{{key}}"),
], 12, 30, desc="Posts in the latest window per topic.")
panel("Top negative entities", "bargauge", [
    (f'topk(10, max by (key) (newswatch_stream_window_negative_share{{{SEL}, kind="entity", window=~"$window"}}))', "{{key}}"),
], 0, 38, unit="percentunit", desc="Entities ($TICKER, watch-list names) with the largest share of bearish posts in the latest window; only the bounded top-K entities by volume are exported.",
      extra={"options": {"orientation": "horizontal", "displayMode": "gradient", "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "showUnfilled": True}})
panel("Negative share by topic", "timeseries", [
    (f'avg by (key) (newswatch_stream_window_negative_share{{{SEL}, kind="topic", window=~"$window"}})', "{{key}}"),
], 12, 38, unit="percentunit", desc="Share of bearish posts per topic in the latest window.")
row("Alerts and delivery", 46)
panel("Alerts timeline", "timeseries", [
    (f'sum by (severity) (increase(newswatch_alerts_fired_total{{{SEL}}}[$__rate_interval]))', "fired {{severity}}"),
    (f'sum by (severity) (increase(newswatch_alerts_resolved_total{{{SEL}}}[$__rate_interval]))', "resolved {{severity}}"),
], 0, 47, desc="Alerts that started firing and that resolved, by severity.",
      extra={"fieldConfig": {"defaults": {"unit": "short", "custom": {"drawStyle": "bars", "lineWidth": 1, "fillOpacity": 80, "showPoints": "never", "spanNulls": False}}, "overrides": []}})
panel("Webhook deliveries by sink and outcome", "timeseries", [
    (f'sum by (sink, outcome) (rate(newswatch_alerts_deliveries_total{{{SEL}}}[$__rate_interval]))', "{{sink}} {{outcome}}"),
], 12, 47, unit="reqps", desc="Delivery attempts per sink: ok, retry, failed, dead_letter, duplicate (already acknowledged, skipped).")
row("GPU (DCGM exporter)", 55)
panel("GPU utilisation", "timeseries", [
    ('avg by (Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL)', "{{Hostname}} GPU {{gpu}}"),
], 0, 56, unit="percent", desc="GPU utilisation of every GPU the NVIDIA DCGM exporter (GPU operator) reports; empty where none runs. Add {container=\"classify-gpu\"} (or exported_container) to see only newswatch's GPUs.")
panel("GPU memory used", "timeseries", [
    ('avg by (Hostname, gpu) (DCGM_FI_DEV_FB_USED)', "{{Hostname}} GPU {{gpu}}"),
], 12, 56, unit="decmbytes", desc="Frame-buffer memory in use (MiB) from the DCGM exporter; empty where no DCGM exporter runs.")

# The key an alert's "Open dashboard" link selects (alerts.dashboard_url_template sets var-kind,
# var-key, var-window). Its row goes first: the rows above move down; panel ids stay as they were.
KSEL = f'{SEL}, kind="$kind", key="$key"'
KEY_ROW_H = 9
first_key_panel = len(panels)
row("Selected key: $kind $key", 0)
panel("Posts per window: $key", "timeseries", [
    (f'max by (window) (newswatch_stream_window_posts{{{KSEL}, window=~"$window"}})', "{{window}}"),
], 0, 1, w=6, desc="Posts in the latest window of the selected key (variables kind and key), per window shape. The per-key gauges hold every topic and the top-K entities and sources by recent activity (docs/metrics.md): a key outside them has no line here; its open alerts still show.")
panel("Mean sentiment: $key", "timeseries", [
    (f'avg by (window) (newswatch_stream_window_mean_sentiment{{{KSEL}, window=~"$window"}})', "{{window}}"),
], 6, 1, w=6, desc="Mean sentiment score in [-1, 1] of the selected key in the latest window.", extra={"fieldConfig": {"defaults": {"unit": "short", "min": -1, "max": 1, "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0, "showPoints": "never", "spanNulls": False}}, "overrides": []}})
panel("Negative share: $key", "timeseries", [
    (f'avg by (window) (newswatch_stream_window_negative_share{{{KSEL}, window=~"$window"}})', "{{window}}"),
], 12, 1, w=6, unit="percentunit", desc="Share of bearish posts of the selected key in the latest window.")
panel("Open alerts: $key", "timeseries", [
    (f'max by (signal, window) (newswatch_alerts_open{{{KSEL}}})', "{{signal}} {{window}}"),
], 18, 1, w=6, desc="1 while the selected key has a firing alert, per signal and detector window (newswatch_alerts_open, exported by the detect stage whatever the top-K holds); no line: no open alert.",
      extra={"fieldConfig": {"defaults": {"unit": "short", "min": 0, "max": 1, "decimals": 0, "custom": {"drawStyle": "line", "lineInterpolation": "stepAfter", "lineWidth": 1, "fillOpacity": 40, "showPoints": "never", "spanNulls": False}}, "overrides": []}})
for p in panels[:first_key_panel]:
    p["gridPos"]["y"] += KEY_ROW_H
panels[:] = panels[first_key_panel:] + panels[:first_key_panel]

# the Model table: instant query
for p in panels:
    if p["type"] != "row" and p.get("targets") is None:
        p["targets"] = [{"refId": "A", "datasource": DS, "expr": f'max by (version, backend) (newswatch_models_info{{{SEL}}})', "format": "table", "instant": True, "range": False, "legendFormat": "", "editorMode": "code"}]
        p["transformations"] = [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}]

# every series that has a key: the window gauges (top-K by recent activity) and the open alerts
KEYED = '{__name__=~"newswatch_stream_window_posts|newswatch_alerts_open", job="newswatch", namespace=~"$namespace"}'
KEYED_KIND = KEYED[:-1] + ', kind="$kind"}'
ALERTS_OPEN = f'max by (kind, key, window, signal) (newswatch_alerts_open{{{SEL}}})'

dashboard = {
    # Import (Dashboards -> New -> Import) asks for this data source and writes its uid wherever
    # "${DS_PROMETHEUS}" appears: only in the datasource variable's current value. Every panel,
    # variable and annotation reads "${datasource}", so the sidecar path (the ConfigMap, loaded
    # without an import) works too: there "${DS_PROMETHEUS}" matches no data source and Grafana
    # selects the first Prometheus one, as for any stale selection.
    "__inputs": [
        {"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "Prometheus scraping newswatch (job=\"newswatch\")", "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"},
    ],
    "__requires": [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "11.0.0"},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
    ] + [
        {"type": "panel", "id": t, "name": n, "version": ""}
        for t, n in (("bargauge", "Bar gauge"), ("stat", "Stat"), ("table", "Table"), ("timeseries", "Time series"))
    ],
    "annotations": {"list": [
        {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
        # one region per series while its alert fires (newswatch_alerts_open, exported by the detect stage)
        {"name": "newswatch alerts", "datasource": DS, "enable": True, "hide": False, "iconColor": "red",
         "expr": ALERTS_OPEN, "step": "30s", "titleFormat": "{{kind}} {{key}}: {{signal}}", "textFormat": "window {{window}}",
         "tagKeys": "kind,key,signal,window", "useValueForTime": False},
    ]},
    "description": "newswatch: one key (what an alert links to), pipeline health, market signals and alert delivery.",
    "editable": True,
    "fiscalYearStartMonth": 0,
    "graphTooltip": 1,
    "id": None,
    "links": [],
    "panels": panels,
    "refresh": "30s",
    "schemaVersion": 39,
    "tags": ["newswatch", "kafka"],
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "current": {"selected": False, "text": "${DS_PROMETHEUS}", "value": "${DS_PROMETHEUS}"}, "hide": 0, "refresh": 1, "regex": "", "includeAll": False, "multi": False, "options": []},
        {"name": "namespace", "label": "Namespace", "type": "query", "datasource": DS, "query": {"query": 'label_values(up{job="newswatch"}, namespace)', "refId": "namespace"}, "definition": 'label_values(up{job="newswatch"}, namespace)', "refresh": 2, "includeAll": True, "allValue": ".*", "multi": True, "current": {}, "hide": 0, "sort": 1, "regex": "", "options": []},
        {"name": "window", "label": "Window", "type": "query", "datasource": DS, "query": {"query": 'label_values(newswatch_stream_window_posts{job="newswatch"}, window)', "refId": "window"}, "definition": 'label_values(newswatch_stream_window_posts{job="newswatch"}, window)', "refresh": 2, "includeAll": True, "allValue": ".*", "multi": False, "current": {}, "hide": 0, "sort": 1, "regex": "", "options": []},
        # kind and key: what an alert's link sets (var-kind, var-key); every key with a window gauge or an
        # open alert. No "All" (the selected-key panels show one key); a value typed in or given by a
        # link is kept even when no series has it (yet).
        {"name": "kind", "label": "Kind", "type": "query", "datasource": DS, "query": {"query": f'label_values({KEYED}, kind)', "refId": "kind"}, "definition": f'label_values({KEYED}, kind)', "refresh": 2, "includeAll": False, "multi": False, "allowCustomValue": True, "current": {"selected": False, "text": "topic", "value": "topic"}, "hide": 0, "sort": 1, "regex": "", "options": []},
        {"name": "key", "label": "Key", "type": "query", "datasource": DS, "query": {"query": f'label_values({KEYED_KIND}, key)', "refId": "key"}, "definition": f'label_values({KEYED_KIND}, key)', "refresh": 2, "includeAll": False, "multi": False, "allowCustomValue": True, "current": {}, "hide": 0, "sort": 5, "regex": "", "options": []},
    ]},
    "time": {"from": "now-1h", "to": "now"},
    "timepicker": {},
    "timezone": "utc",
    "title": "newswatch",
    "uid": "newswatch",
    "version": 1,
    "weekStart": "",
}
json.dump(dashboard, open(CHART / "dashboards" / "newswatch.json", "w"), indent=2)
print(len(panels))
