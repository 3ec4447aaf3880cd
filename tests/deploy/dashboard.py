"""The Grafana dashboard's panels and their PromQL, with Grafana's variables substituted."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.support.chart import CHART

DASHBOARD = CHART / "dashboards" / "newswatch.json"

#: What Grafana would put in for the dashboard's variables when "All" is selected.
VARIABLES = {
    "$__rate_interval": "30s",
    "$__interval": "5s",
    "$namespace": ".*",
    "$window": ".*",
}


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel."""

    panel: str
    ref: str
    expr: str
    instant: bool

    @property
    def needs_dcgm(self) -> bool:
        """The query reads only NVIDIA DCGM exporter metrics (present only on GPU nodes)."""
        return "DCGM_" in self.expr and "newswatch_" not in self.expr and "up{" not in self.expr


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    """The dashboard JSON."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def substitute(expr: str, values: Mapping[str, str] | None = None) -> str:
    """Replace Grafana's variables (longest names first): :data:`VARIABLES`, then ``values``
    (``{"$key": "stocknet"}``: what a selection or a link's ``var-key`` puts in)."""
    merged = {**VARIABLES, **(values or {})}
    for name in sorted(merged, key=len, reverse=True):
        expr = expr.replace(name, merged[name])
    return expr


def panel_queries(
    dashboard: dict[str, Any] | None = None, values: Mapping[str, str] | None = None
) -> list[PanelQuery]:
    """Every query of every non-row panel (rows' nested panels included), ``values`` substituted."""
    dashboard = dashboard or load()
    panels: list[dict[str, Any]] = []
    for p in dashboard["panels"]:
        panels.append(p)
        panels.extend(p.get("panels", []))
    out = []
    for p in panels:
        if p["type"] == "row":
            continue
        for t in p.get("targets", []):
            out.append(
                PanelQuery(p["title"], t["refId"], substitute(t["expr"], values), bool(t.get("instant")))
            )
    return out


def variables(dashboard: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The dashboard's template variables by name."""
    dashboard = dashboard or load()
    return {v["name"]: v for v in dashboard["templating"]["list"]}


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+), *(?P<label>\w+)\)$")


def label_values_query(variable: dict[str, Any], values: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(series selector, label)`` of a ``label_values(selector, label)`` query variable, substituted."""
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    m = _LABEL_VALUES.match(text)
    assert m, f"variable {variable['name']}: not a label_values(selector, label) query: {text}"
    return substitute(m["selector"], values), m["label"]


def prometheus_annotations(dashboard: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The annotations drawn from a Prometheus query (not Grafana's built-in one)."""
    dashboard = dashboard or load()
    annotations: list[dict[str, Any]] = dashboard["annotations"]["list"]
    return [a for a in annotations if a.get("datasource", {}).get("type") == "prometheus"]


def link_variables(url: str) -> dict[str, str]:
    """``{"$name": value}`` for every ``var-name=value`` of a dashboard link (values unquoted)."""
    return {f"${k[4:]}": v for k, v in parse_qsl(urlsplit(url).query) if k.startswith("var-")}


def datasource_refs(node: Any) -> list[Any]:
    """Every ``datasource`` value anywhere in the dashboard (panels, targets, variables, annotations)."""
    found: list[Any] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                found.append(v)
            found.extend(datasource_refs(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(datasource_refs(v))
    return found


def grafana_import(dashboard: dict[str, Any], inputs: Mapping[str, str]) -> dict[str, Any]:
    """What Grafana's import does with ``__inputs`` (pkg/services/dashboardimport/utils,
    DashTemplateEvaluator): every input must be given, each ``${NAME}`` of an input in any
    string is replaced by the value picked, other ``${...}`` stay, ``__inputs`` is dropped."""
    names = {f"${{{i['name']}}}": i["name"] for i in dashboard.get("__inputs", [])}
    missing = [n for n in names.values() if n not in inputs]
    assert not missing, f"import needs a value for {missing}"

    def ev(node: Any) -> Any:
        if isinstance(node, str):
            return re.sub(r"\$\{.+?\}", lambda m: inputs[names[m[0]]] if m[0] in names else m[0], node)
        if isinstance(node, dict):
            return {k: ev(v) for k, v in node.items() if k != "__inputs"}
        if isinstance(node, list):
            return [ev(v) for v in node]
        return node

    result: dict[str, Any] = ev(dashboard)
    return result
