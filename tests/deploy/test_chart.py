"""The Helm chart: lint, render and validate every object against real schemas."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from newswatch.settings import load_settings
from tests.support.chart import (
    CHART,
    CI_VALUES,
    CRD_KINDS,
    Rendered,
    lint_with_helm_sdkpy,
    lint_with_values,
    load_values,
    notes,
    render,
    validation_errors,
)

#: The ci/*-values.yaml scenarios; "default" is the chart's defaults.
SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in CI_VALUES.glob("*-values.yaml"))


def _deployments(objs: list[Rendered]) -> dict[str, dict[str, Any]]:
    return {o.name: o.obj for o in objs if o.kind == "Deployment"}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_object_matches_its_schema(scenario: str) -> None:
    objs = render(load_values(scenario))
    assert len(objs) >= 10
    problems = {f"{o.template} {o.kind}/{o.name}": validation_errors(o.obj) for o in objs}
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict_with_values(scenario: str) -> None:
    report = lint_with_values(load_values(scenario))
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("scenario", [None, "gpu"], ids=lambda s: s or "defaults")
def test_lint_with_helm_sdkpy(scenario: str | None, tmp_path: Path) -> None:
    """helm-sdkpy lints a chart directory; the scenario's values are merged into its values.yaml."""
    chart = tmp_path / "newswatch"
    shutil.copytree(CHART, chart)
    merged = _merge(yaml.safe_load((CHART / "values.yaml").read_text()), load_values(scenario))
    (chart / "values.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    report = lint_with_helm_sdkpy(chart)
    assert report["TotalChartsLinted"] == 1
    assert not report["Errors"]
    assert [m for m in report["Messages"] if m["Severity"] >= 2] == []


def test_helm_sdkpy_lint_catches_a_broken_template(tmp_path: Path) -> None:
    chart = tmp_path / "newswatch"
    shutil.copytree(CHART, chart)
    with (chart / "templates" / "configmap.yaml").open("a") as f:
        f.write("  broken: {{ .Values.missing.key }}\n")
    report = lint_with_helm_sdkpy(chart)
    assert report["Errors"]
    assert any(m["Severity"] == 3 for m in report["Messages"])


def test_validation_rejects_a_wrong_object() -> None:
    objs = render()
    deployment = next(o.obj for o in objs if o.kind == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    deployment["spec"]["replicass"] = 2
    assert validation_errors(deployment)
    monitor = next(o.obj for o in objs if o.kind == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert validation_errors(monitor)


def test_default_render_has_the_expected_objects() -> None:
    objs = render()
    kinds = {(o.kind, o.name) for o in objs}
    for stage in ("classify-cpu", "aggregate", "alerts-run"):
        assert ("Deployment", f"nw-newswatch-{stage}") in kinds
        assert ("Service", f"nw-newswatch-{stage}") in kinds
        assert ("PodDisruptionBudget", f"nw-newswatch-{stage}") in kinds
        assert ("NetworkPolicy", f"nw-newswatch-{stage}") in kinds
    assert ("Deployment", "nw-newswatch-classify-gpu") not in kinds
    # no sink configured by default: `newswatch notify` would refuse to start, so it is not deployed
    assert ("Deployment", "nw-newswatch-notify") not in kinds
    assert "notifier is not deployed" in notes()
    for kind in ("ConfigMap", "Secret", "ServiceMonitor", "PrometheusRule", "ServiceAccount", "Pod"):
        assert any(k == kind for k, _ in kinds), kind
    assert not any(k in ("ScaledObject", "HorizontalPodAutoscaler") for k, _ in kinds)
    args = {
        name: d["spec"]["template"]["spec"]["containers"][0]["args"] for name, d in _deployments(objs).items()
    }
    assert args["nw-newswatch-alerts-run"][-2:] == ["alerts", "run"]
    assert args["nw-newswatch-aggregate"][-1] == "aggregate"


def test_gpu_scenario() -> None:
    objs = render(load_values("gpu"))
    deployments = _deployments(objs)
    gpu = deployments["nw-newswatch-classify-gpu"]["spec"]["template"]["spec"]
    container = gpu["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":0.1.0-cuda")
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert gpu["runtimeClassName"] == "nvidia"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NEWSWATCH_MODELS_VARIANT"] == "fp16"
    assert env["NEWSWATCH_MODELS_DEVICE"] == "cuda"
    cpu = deployments["nw-newswatch-classify-cpu"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    # KEDA owns the classify replica counts; both variants scale on the classify group's lag
    scaled = {o.name: o.obj for o in objs if o.kind == "ScaledObject"}
    assert set(scaled) == {"nw-newswatch-classify-cpu", "nw-newswatch-classify-gpu"}
    for name, so in scaled.items():
        assert "replicas" not in deployments[name]["spec"]
        trigger = so["spec"]["triggers"][0]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == "newswatch-classify"
        assert trigger["metadata"]["topic"] == "newswatch.posts"
    # the model comes from the PVC
    volumes = {v["name"]: v for v in gpu["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"]["claimName"] == "newswatch-models"


def test_pods_are_locked_down_and_probed() -> None:
    for scenario in SCENARIOS:
        for o in render(load_values(scenario)):
            if o.kind not in ("Deployment", "Pod"):
                continue
            pod = o.obj["spec"] if o.kind == "Pod" else o.obj["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            assert pod["automountServiceAccountToken"] is False
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, o.name
                assert sc["allowPrivilegeEscalation"] is False, o.name
                assert sc["capabilities"]["drop"] == ["ALL"], o.name
                assert c["resources"]["limits"]["memory"], o.name
                if o.kind == "Deployment":
                    assert c["readinessProbe"], o.name
                    assert c["livenessProbe"], o.name


def test_checksum_annotations_roll_pods_on_config_change() -> None:
    def checksums(values: dict[str, Any]) -> dict[str, str]:
        d = _deployments(render(values))["nw-newswatch-aggregate"]
        ann = d["spec"]["template"]["metadata"]["annotations"]
        return {k: v for k, v in ann.items() if k.startswith("checksum/")}

    base = checksums({})
    assert set(base) == {"checksum/config", "checksum/secret"}
    changed = checksums({"config": {"aggregate": {"grace_ms": 1000}}})
    assert changed["checksum/config"] != base["checksum/config"]
    assert changed["checksum/secret"] == base["checksum/secret"]
    assert checksums({"secrets": {"webhookSecret": "whsec_x"}})["checksum/secret"] != base["checksum/secret"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_mounted_settings_load_in_newswatch(
    scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap's YAML plus each Deployment's plain env is a valid newswatch configuration."""
    objs = render(load_values(scenario))
    cm = next(o.obj for o in objs if o.kind == "ConfigMap" and o.name.endswith("-settings"))
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(cm["data"]["settings.yaml"])
    secrets = {o.name: o.obj.get("stringData") or {} for o in objs if o.kind == "Secret"}
    for name, d in _deployments(objs).items():
        if name.endswith("-broker"):
            continue
        for var in [v for v in os.environ if v.startswith("NEWSWATCH_")]:
            monkeypatch.delenv(var)
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]:
            if not e["name"].startswith("NEWSWATCH_") or e["name"] == "NEWSWATCH_CONFIG":
                continue
            if "value" in e:
                monkeypatch.setenv(e["name"], e["value"])
            ref = e.get("valueFrom", {}).get("secretKeyRef", {})
            if ref.get("key") in secrets.get(ref.get("name"), {}):
                monkeypatch.setenv(e["name"], secrets[ref["name"]][ref["key"]])
        settings = load_settings(settings_file)
        if name.endswith("-notify") and secrets:  # an existingSecret's content is unknown here
            from newswatch.alerts.notify import configured_sinks

            assert configured_sinks(settings.notify), "the notifier would start without a sink"
        assert settings.metrics.host == "0.0.0.0"
        assert settings.metrics.port == 9400
        if name.endswith("classify-gpu"):
            assert settings.models.variant == "fp16"
            assert settings.models.device == "cuda"
            assert settings.models.providers[0] == "CUDAExecutionProvider"
    if scenario == "trial-broker":
        settings = load_settings(settings_file)
        assert settings.kafka.broker_compat == "tansu"
        assert settings.kafka.bootstrap_servers == "nw-newswatch-broker:9092"


def test_prometheus_rule_embeds_the_rules_file() -> None:
    rule = next(o.obj for o in render() if o.kind == "PrometheusRule")
    source = yaml.safe_load((CHART / "rules" / "newswatch.rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]


def test_dashboard_configmap_carries_the_dashboard() -> None:
    cm = next(o.obj for o in render() if o.kind == "ConfigMap" and o.name.endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert yaml.safe_load(cm["data"]["newswatch.json"]) == yaml.safe_load(
        (CHART / "dashboards" / "newswatch.json").read_text()
    )


def test_helm_test_hook_checks_every_stage() -> None:
    pod = next(o.obj for o in render(load_values("gpu")) if o.kind == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    for stage in ("classify-cpu", "classify-gpu", "aggregate", "alerts-run", "notify"):
        assert f"nw-newswatch-{stage}:9400" in script
    compile(script, "helm-test", "exec")  # the embedded check is valid Python


def test_secret_and_existing_secret() -> None:
    objs = render(load_values("gpu"))
    secret = next(o.obj for o in objs if o.kind == "Secret")
    assert secret["stringData"]["webhook-urls"] == '["https://hooks.example.com/newswatch"]'
    notify = _deployments(objs)["nw-newswatch-notify"]["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in notify["env"] if "valueFrom" in e}
    assert refs["NEWSWATCH_NOTIFY_WEBHOOK_URLS"]["name"] == secret["metadata"]["name"]
    args = _deployments(objs)["nw-newswatch-notify"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-1] == "notify"
    objs = render(load_values("hpa-existing-secret"))
    assert not any(o.kind == "Secret" for o in objs)
    notify = _deployments(objs)["nw-newswatch-notify"]["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in notify["env"] if "valueFrom" in e}
    assert refs["NEWSWATCH_NOTIFY_WEBHOOK_SECRET"]["name"] == "newswatch-webhooks"
    assert refs["NEWSWATCH_KAFKA_SASL_PLAIN_PASSWORD"]["key"] == "kafka-sasl-password"
    assert {o.kind for o in objs} >= {"HorizontalPodAutoscaler"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka": {"bootstrapServers": ""}}, "kafka.bootstrapServers"),
        ({"classifyGpu": {"enabled": True, "variant": "int8"}}, "classifyGpu.variant"),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "autoscaling.minReplicas"),
        ({"model": {"source": "volume"}}, "model.volume"),
        (
            {
                "autoscaling": {"mode": "keda"},
                "kafka": {"saslMechanism": "PLAIN", "securityProtocol": "SASL_SSL"},
            },
            "TriggerAuthentication",
        ),
        ({"secrets": {"existingSecret": "s", "webhookSecret": "whsec_a2V5"}}, "existingSecret"),
    ],
)
def test_validate_values_fails_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    "values",
    [
        {"autoscaling": {"mode": "always"}},
        {"kafka": {"partitions": 0}},
        {"classifyCpu": {"replicas": 2}},
        {"aggregate": {"replicaCount": 2}},
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render(values)


def test_notes_warn_and_explain() -> None:
    text = notes(load_values("trial-broker"))
    assert "embedded broker keeps data in memory" in text
    assert "helm test nw" in text
    assert "int8 graph only" in notes({"classifyGpu": {"enabled": True}})
    assert "int8 graph only" not in notes(load_values("gpu"))  # the GPU scenario mounts its model


def test_every_value_is_documented_and_in_the_schema() -> None:
    source = (CHART / "values.yaml").read_text()
    params = dict(re.findall(r"^\s*## @param (\S+) (.+)$", source, re.M))
    values = yaml.safe_load(source)
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())

    def leaves(node: Any, path: str) -> list[str]:
        if path in params or not isinstance(node, dict) or not node:
            return [path]
        return [leaf for k, v in node.items() for leaf in leaves(v, f"{path}.{k}" if path else k)]

    undocumented = [p for p in leaves(values, "") if p not in params]
    assert undocumented == []
    readme = (CHART / "README.md").read_text()
    assert [p for p in params if f"| `{p}` | {params[p]} |" not in readme] == []
    for path, description in params.items():
        node = schema
        for part in path.split("."):
            node = node["properties"][part]
        assert node["description"] == description, path


def test_crd_schemas_cover_the_crd_kinds_the_chart_uses() -> None:
    kinds = {(o.obj["apiVersion"], o.kind) for s in SCENARIOS for o in render(load_values(s))}
    custom = {k for k in kinds if "." in k[0].split("/")[0] and not k[0].startswith(("apps/", "policy/"))}
    custom = {k for k in custom if not k[0].endswith("k8s.io/v1")}
    assert custom == set(CRD_KINDS)
