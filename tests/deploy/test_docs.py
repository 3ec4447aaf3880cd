"""The observability docs stay in step with the code: every metric documented, every doc present."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from newswatch.metrics import Metrics
from tests.support.chart import REPO

DOCS = REPO / "docs"


def test_every_metric_is_documented() -> None:
    metrics = Metrics(CollectorRegistry())
    text = (DOCS / "metrics.md").read_text()
    names = set()
    for family in metrics.registry.collect():
        name = family.name
        if family.type == "counter":
            name += "_total"
        elif family.type == "info":
            name += "_info"
        names.add(name)
    assert len(names) >= 15
    assert sorted(n for n in names if f"`{n}`" not in text) == []


def test_deploy_and_scaling_docs_cover_the_essentials() -> None:
    deploy = (DOCS / "deploy.md").read_text()
    for needle in ("helm install", "helm test", "grafana_dashboard", "existingSecret", "model.source=volume"):
        assert needle in deploy, needle
    scaling = (DOCS / "scaling.md").read_text()
    for needle in ("50,000 posts/s", "partitions", "first bottleneck", "projected", "measured"):
        assert needle in scaling, needle
