"""extraVolumes / extraVolumeMounts / extraEnv, global and per stage (issue 18 point 8): a Kafka
CA from a Secret, mounted where `kafka.ssl_cafile` points, in every stage."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python as helm
import pytest

from newswatch.settings import load_settings
from tests.support.chart import load_values, render, validation_errors

STAGES = ("classify-cpu", "classify-gpu", "aggregate", "alerts-run", "notify")
CA_DIR = "/etc/kafka-ca"
CA_FILE = f"{CA_DIR}/ca.crt"
#: the documented recipe (docs/deploy.md, "A Kafka CA"): TLS to Kafka, the CA from a Secret
KAFKA_CA: dict[str, Any] = {
    "kafka": {"bootstrapServers": "kafka.example.com:9093", "securityProtocol": "SSL"},
    "extraVolumes": [
        {
            "name": "kafka-ca",
            "secret": {"secretName": "kafka-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
        }
    ],
    "extraVolumeMounts": [{"name": "kafka-ca", "mountPath": CA_DIR, "readOnly": True}],
    "config": {"kafka": {"ssl_cafile": CA_FILE}},
    "classifyGpu": {"enabled": True},
    "model": {"source": "volume", "volume": {"persistentVolumeClaim": {"claimName": "models"}}},
    "secrets": {"webhookUrls": ["https://hooks.example.com/nw"]},
}


def _pods(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """stage -> pod spec of each stage's Deployment."""
    return {
        o.name.removeprefix("nw-newswatch-"): o.obj["spec"]["template"]["spec"]
        for o in render(values)
        if o.kind == "Deployment" and not o.name.endswith("-broker")
    }


def _env(pod: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}


def test_a_kafka_ca_secret_is_mounted_where_ssl_cafile_points(tmp_path: Path) -> None:
    objs = render(KAFKA_CA)
    assert {f"{o.kind}/{o.name}": validation_errors(o.obj) for o in objs if validation_errors(o.obj)} == {}
    cm = next(o.obj for o in objs if o.kind == "ConfigMap" and o.name.endswith("-settings"))
    (tmp_path / "settings.yaml").write_text(cm["data"]["settings.yaml"])
    settings = load_settings(tmp_path / "settings.yaml")
    assert settings.kafka.security_protocol == "SSL"
    assert str(settings.kafka.ssl_cafile) == CA_FILE
    pods = _pods(KAFKA_CA)
    assert set(pods) == set(STAGES)
    for stage, pod in pods.items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "kafka-ca", stage
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["kafka-ca"] == {"name": "kafka-ca", "mountPath": CA_DIR, "readOnly": True}, stage
        assert PurePosixPath(CA_FILE).parent == PurePosixPath(mounts["kafka-ca"]["mountPath"])
        # the chart's own volumes are all still there
        assert {"settings", "tmp"} <= set(volumes), stage
        assert len(volumes) == len(pod["volumes"]), f"{stage}: duplicate volume names"
        assert {m["name"] for m in pod["containers"][0]["volumeMounts"]} <= set(volumes), stage


def test_the_sasl_ssl_scenario_mounts_its_ca() -> None:
    values = load_values("hpa-existing-secret")
    ca = values["config"]["kafka"]["ssl_cafile"]
    for stage, pod in _pods(values).items():
        mounts = pod["containers"][0]["volumeMounts"]
        assert any(ca.startswith(m["mountPath"] + "/") for m in mounts if m["name"] == "kafka-ca"), stage
        assert any(v["name"] == "kafka-ca" for v in pod["volumes"]), stage
        env = _env(pod)
        assert env["NEWSWATCH_MODELS_MAX_LENGTH"] == ("128" if stage == "classify-cpu" else "96"), stage


def test_stage_entries_come_after_the_global_ones_and_replace_them() -> None:
    values = {
        "extraEnv": [{"name": "A", "value": "global"}, {"name": "B", "value": "global"}],
        "extraVolumes": [{"name": "shared", "emptyDir": {}}, {"name": "swap", "emptyDir": {}}],
        "extraVolumeMounts": [
            {"name": "shared", "mountPath": "/shared"},
            {"name": "swap", "mountPath": "/swap"},
        ],
        "aggregate": {
            "extraEnv": [{"name": "B", "value": "aggregate"}, {"name": "C", "value": "aggregate"}],
            "extraVolumes": [{"name": "swap", "configMap": {"name": "agg"}}, {"name": "own", "emptyDir": {}}],
            "extraVolumeMounts": [
                {"name": "own", "mountPath": "/swap", "readOnly": True},
                {"name": "own", "mountPath": "/own"},
            ],
        },
    }
    pods = _pods(values)
    assert {
        s: validation_errors({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": p})
        for s, p in pods.items()
    } == {s: [] for s in pods}
    agg = pods["aggregate"]
    env = [(e["name"], e.get("value")) for e in agg["containers"][0]["env"] if e["name"] in ("A", "B", "C")]
    assert env == [("A", "global"), ("B", "aggregate"), ("C", "aggregate")]
    extra = [v for v in agg["volumes"] if v["name"] in ("shared", "swap", "own")]
    assert extra == [
        {"name": "shared", "emptyDir": {}},
        {"name": "swap", "configMap": {"name": "agg"}},
        {"name": "own", "emptyDir": {}},
    ]
    mounts = [
        m for m in agg["containers"][0]["volumeMounts"] if m["mountPath"] in ("/shared", "/swap", "/own")
    ]
    assert mounts == [
        {"name": "shared", "mountPath": "/shared"},
        {"name": "own", "mountPath": "/swap", "readOnly": True},
        {"name": "own", "mountPath": "/own"},
    ]
    # the other stages get the global lists only
    classify = pods["classify-cpu"]
    assert [
        (e["name"], e["value"]) for e in classify["containers"][0]["env"] if e["name"] in ("A", "B", "C")
    ] == [
        ("A", "global"),
        ("B", "global"),
    ]
    assert [v["name"] for v in classify["volumes"] if v["name"] in ("shared", "swap", "own")] == [
        "shared",
        "swap",
    ]


def test_entries_are_rendered_as_templates() -> None:
    values = {
        "extraVolumes": [{"name": "ca", "secret": {"secretName": "{{ .Release.Name }}-kafka-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/kafka-ca"}],
        "extraEnv": [{"name": "RELEASE_NAMESPACE", "value": "{{ .Release.Namespace }}"}],
    }
    pod = _pods(values)["aggregate"]
    assert next(v for v in pod["volumes"] if v["name"] == "ca")["secret"]["secretName"] == "nw-kafka-ca"
    assert _env(pod)["RELEASE_NAMESPACE"] == "newswatch"


def test_without_extras_nothing_changes() -> None:
    pod = _pods({})["aggregate"]
    assert [v["name"] for v in pod["volumes"]] == ["settings", "tmp", "data"]
    assert [m["name"] for m in pod["containers"][0]["volumeMounts"]] == ["settings", "tmp", "data"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"extraVolumes": [{"name": "tmp", "emptyDir": {}}]}, "extraVolumes[0]: the name tmp is taken"),
        (
            {"notify": {"extraVolumes": [{"name": "settings", "emptyDir": {}}]}},
            "notify.extraVolumes[0]: the name settings",
        ),
        (
            {"extraVolumeMounts": [{"name": "kafka-ca", "mountPath": CA_DIR}]},
            "extraVolumeMounts mounts volume kafka-ca at /etc/kafka-ca",
        ),
        (
            {  # a stage's volume does not reach the other stages
                "aggregate": {"extraVolumes": [{"name": "kafka-ca", "secret": {"secretName": "kafka-ca"}}]},
                "extraVolumeMounts": [{"name": "kafka-ca", "mountPath": CA_DIR}],
            },
            "classifyCpu: extraVolumeMounts mounts volume kafka-ca",
        ),
    ],
)
def test_clashing_or_dangling_volumes_fail_the_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    "values",
    [
        {"extraVolumeMounts": [{"name": "ca"}]},  # no mountPath
        {"extraVolumes": [{"secret": {"secretName": "ca"}}]},  # no name
        {"aggregate": {"extraEnv": [{"value": "1"}]}},  # no name
        {"alerts": {"extraVolumes": {"name": "ca"}}},  # not a list
    ],
)
def test_schema_rejects_malformed_extras(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render(values)
