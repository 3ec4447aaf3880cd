"""Issue 19, F11: the chart's network policies and secrets, rendered with Helm's own engine and
validated against the Kubernetes schemas (as in test_chart.py)."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.support.chart import Rendered, load_values, notes, render, validation_errors

SCENARIO = "prometheus-other-namespace"
#: A sink configured so the notifier is deployed (its URL in an existing Secret).
WITH_SINK: dict[str, Any] = {"secrets": {"create": False, "existingSecret": "newswatch-sinks"}}


def _policies(objs: list[Rendered]) -> dict[str, dict[str, Any]]:
    return {o.name.removeprefix("nw-newswatch-"): o.obj["spec"] for o in objs if o.kind == "NetworkPolicy"}


def _release_peer(peer: dict[str, Any]) -> bool:
    labels = peer.get("podSelector", {}).get("matchLabels", {})
    return set(peer) == {"podSelector"} and labels == {
        "app.kubernetes.io/name": "newswatch",
        "app.kubernetes.io/instance": "nw",
    }


def test_metrics_ingress_admits_only_the_release_by_default() -> None:
    """F11: the metrics port was open to any peer by default (an ingress rule without ``from``)."""
    policies = _policies(render(WITH_SINK))
    assert set(policies) >= {"classify-cpu", "aggregate", "alerts-run", "notify"}
    for name, spec in policies.items():
        [rule] = spec["ingress"]
        assert [p["port"] for p in rule["ports"]] == [9400], name
        assert "from" in rule, f"{name}: the metrics port is open to every peer"
        assert all(_release_peer(p) for p in rule["from"]), name
    text = notes(WITH_SINK)
    assert "Prometheus cannot scrape" in text and "networkPolicy.metrics.namespaceSelector" in text


def test_prometheus_in_another_namespace_scenario() -> None:
    objs = render(load_values(SCENARIO))
    assert {f"{o.kind}/{o.name}": e for o in objs if (e := validation_errors(o.obj))} == {}
    for name, spec in _policies(objs).items():
        peers = spec["ingress"][0]["from"]
        scrapers = [p for p in peers if not _release_peer(p)]
        # one peer holding both selectors: Prometheus pods of the monitoring namespace (AND, not OR)
        assert scrapers == [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ], name
    assert "Prometheus cannot scrape" not in notes(load_values(SCENARIO))


def test_a_pod_selector_alone_admits_pods_of_the_release_namespace() -> None:
    values = {**WITH_SINK, "networkPolicy": {"metrics": {"podSelector": {"matchLabels": {"app": "vmagent"}}}}}
    for spec in _policies(render(values)).values():
        peers = spec["ingress"][0]["from"]
        assert {"podSelector": {"matchLabels": {"app": "vmagent"}}} in peers
        assert not any("namespaceSelector" in p for p in peers)


def test_egress_narrows_to_the_kafka_and_webhook_cidrs() -> None:
    """F11: egress to Kafka and the webhooks went to any address, with no way to narrow it."""
    policies = _policies(render(load_values(SCENARIO)))
    for name, spec in policies.items():
        kafka = [r for r in spec["egress"] if {p["port"] for p in r["ports"]} == {9092, 9093}]
        assert kafka and kafka[0]["to"] == [{"ipBlock": {"cidr": "10.40.0.0/24"}}], name
        webhook = [r for r in spec["egress"] if [p["port"] for p in r["ports"]] == [443]]
        if name == "notify":
            assert webhook[0]["to"] == [{"ipBlock": {"cidr": "10.50.0.10/32"}}]
        else:
            assert webhook == [], f"{name} reaches no webhook"
        dns = spec["egress"][0]
        assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
        # no other rule: nothing else goes out
        assert len(spec["egress"]) == (3 if name == "notify" else 2), name


def test_default_egress_reaches_webhooks_over_https_only() -> None:
    spec = _policies(render(WITH_SINK))["notify"]
    webhook = [r for r in spec["egress"] if 443 in {p["port"] for p in r["ports"]}]
    assert [p["port"] for p in webhook[0]["ports"]] == [443]


def test_the_trial_broker_is_the_only_kafka_peer() -> None:
    for name, spec in _policies(render({**load_values("trial-broker"), **WITH_SINK})).items():
        if name == "broker":  # the broker's own policy (templates/broker.yaml)
            continue
        [kafka] = [r for r in spec["egress"] if {p["port"] for p in r["ports"]} == {9092}]
        assert kafka["to"] == [
            {
                "podSelector": {
                    "matchLabels": {
                        "app.kubernetes.io/name": "newswatch",
                        "app.kubernetes.io/instance": "nw",
                        "app.kubernetes.io/component": "broker",
                    }
                }
            }
        ], name


@pytest.mark.parametrize("cidr", ["10.0.0.0", "any", "10.0.0.0/24; rm -rf"])
def test_values_schema_rejects_a_bad_cidr(cidr: str) -> None:
    with pytest.raises(helm.HelmValuesError):
        render({"networkPolicy": {"kafkaCidrs": [cidr]}})


CANARY = "xoxb-CANARY-0e6c"
SLACK = f"https://hooks.slack.com/services/T000/B000/{CANARY}"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"notify": {"sinks": [{"name": "chat", "type": "slack", "url": SLACK}]}},
            "config.notify.sinks[0].url (chat): a sink url must not be inline",
        ),
        (
            {"notify": {"sinks": [{"name": "pd", "type": "pagerduty", "secret": CANARY}]}},
            "config.notify.sinks[0].secret (pd)",
        ),
        ({"notify": {"webhook_urls": [SLACK]}}, "config.notify.webhook_urls"),
        ({"notify": {"webhook_secret": f"whsec_{CANARY}"}}, "config.notify.webhook_secret"),
        ({"kafka": {"sasl_plain_password": CANARY}}, "config.kafka.sasl_plain_password"),
    ],
    ids=["sink-url", "sink-secret", "webhook-urls", "webhook-secret", "kafka-password"],
)
def test_an_inline_secret_fails_the_render(config: dict[str, Any], message: str) -> None:
    """F11: an inline sink URL (a Slack token) was rendered in plain text into the ConfigMap."""
    with pytest.raises(helm.HelmError) as err:
        render({"config": config})
    text = str(err.value)
    assert message in text and "existingSecret" in text
    assert CANARY not in text, "the message never repeats the secret"


def test_no_scenario_puts_a_secret_in_the_configmap() -> None:
    from tests.support.chart import CI_VALUES

    for path in sorted(CI_VALUES.glob("*-values.yaml")):
        objs = render(load_values(path.name.removesuffix("-values.yaml")))
        cm = next(o.obj for o in objs if o.kind == "ConfigMap" and o.name.endswith("-settings"))
        settings = yaml.safe_load(cm["data"]["settings.yaml"])
        notify = settings.get("notify") or {}
        assert not {"webhook_urls", "webhook_secret"} & set(notify), path.name
        for sink in notify.get("sinks", []):
            assert not {"url", "secret"} & set(sink), path.name
        assert "sasl_plain_password" not in settings["kafka"], path.name


def test_a_plain_http_webhook_url_needs_allow_insecure() -> None:
    values = {"secrets": {"webhookUrls": ["http://relay.internal:8080/hook"]}}
    with pytest.raises(helm.HelmError, match=re.escape("secrets.webhookUrls[0]")):
        render(values)
    objs = render({**values, "config": {"notify": {"webhook_allow_insecure": True}}})
    assert any(o.kind == "Deployment" and o.name.endswith("-notify") for o in objs)
