"""Generates README.md's parameter tables from the `## @param` lines of values.yaml.

Run from anywhere: python helm/newswatch/tools/gen_readme.py
"""
from pathlib import Path

CHART = Path(__file__).resolve().parents[1]
import re, yaml, json
src = open(CHART / "values.yaml").read()
values = yaml.safe_load(src)
lines = src.splitlines()
sections = []
cur = None
for l in lines:
    m = re.match(r"^\s*## @section (.+)$", l)
    if m:
        cur = (m.group(1), []); sections.append(cur); continue
    m = re.match(r"^\s*## @param (\S+) (.+)$", l)
    if m and cur:
        cur[1].append((m.group(1), m.group(2)))
def get(path):
    node = values
    for p in path.split("."):
        node = node[p]
    return node
out = ["# newswatch Helm chart", "",
"Real-time finance text-stream monitoring on Kubernetes: classify posts from Kafka, keep rolling",
"sentiment/volume windows, detect surges, deliver alerts by webhook; Prometheus metrics, rules and a",
"Grafana dashboard. The full walk-through is `docs/deploy.md`; capacity planning is `docs/scaling.md`;",
"every metric is in `docs/metrics.md`.", "",
"```bash",
"helm install nw ./helm/newswatch -n newswatch --create-namespace \\",
"  --set kafka.bootstrapServers=my-kafka:9092 \\",
"  --set 'secrets.webhookUrls={https://hooks.example.com/newswatch}'",
"helm test nw -n newswatch",
"```", "",
"Scenario values files: `ci/default-values.yaml`, `ci/gpu-values.yaml`, `ci/hpa-existing-secret-values.yaml`,",
"`ci/trial-broker-values.yaml`. The table below is generated from the `## @param` lines of",
"`values.yaml` (`tests/deploy/test_chart.py` checks they agree).", "", "## Parameters", ""]
for title, params in sections:
    out += [f"### {title}", "", "| Name | Description | Default |", "|---|---|---|"]
    for path, desc in params:
        v = get(path)
        d = json.dumps(v) if not isinstance(v, str) else (f'`"{v}"`' if v == "" else f"`{v}`")
        if not isinstance(v, str):
            d = f"`{d}`"
        if len(d) > 60:
            d = "see values.yaml"
        esc = desc.replace('|', chr(92) + '|')
        out.append(f"| `{path}` | {esc} | {d} |")
    out.append("")
open(CHART / "README.md", "w").write("\n".join(out))
print(sum(len(p) for _, p in sections))
