"""The Grafana dashboard's panels and their PromQL, with Grafana's variables substituted."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chart import CHART

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


def substitute(expr: str) -> str:
    """Replace Grafana's variables (longest names first)."""
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    return expr


def panel_queries(dashboard: dict[str, Any] | None = None) -> list[PanelQuery]:
    """Every query of every non-row panel (rows' nested panels included)."""
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
            out.append(PanelQuery(p["title"], t["refId"], substitute(t["expr"]), bool(t.get("instant"))))
    return out
