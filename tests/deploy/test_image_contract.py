"""The chart and the image agree: every rendered container asks only for what the image does.

Runs without a container engine (``tests/image`` runs the same manifests from the built
image): commands against the project's console scripts and command line, ports against the
ports each stage's settings open, probe paths against a real stage server, writable paths
against the mounted volumes, the user against the Dockerfile's. Deliberately drifted
manifests show that each kind of mismatch is caught.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART, CI_VALUES, REPO, load_values, notes, render

from .image import ImageFacts, drift, image_facts

FACTS = image_facts()
SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in CI_VALUES.glob("*-values.yaml"))


def _objs(scenario: str | None = "trial-broker", **values: Any) -> list[dict[str, Any]]:
    return [r.obj for r in render({**load_values(scenario), **values})]


def _stage(objs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    dep = next(
        o
        for o in objs
        if o["kind"] == "Deployment" and o["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )
    container: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_image_is_what_the_chart_expects() -> None:
    assert FACTS.entrypoint == ("newswatch",) and "newswatch" in FACTS.console_scripts
    assert FACTS.user == "10001:10001", "runAsNonRoot needs a numeric USER"
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # the image's default tag is the chart's appVersion, which is the project version `make image` tags
    assert chart["appVersion"] == FACTS.version
    assert values["metrics"]["port"] in FACTS.exposed
    assert FACTS.env["NEWSWATCH_METRICS_PORT"] == str(values["metrics"]["port"])
    assert FACTS.env["NEWSWATCH_METRICS_HOST"] == "0.0.0.0"


def test_the_charts_default_image_is_the_one_make_image_builds() -> None:
    makefile = (REPO / "Makefile").read_text()
    (image,) = re.findall(r"^IMAGE\s*\?=\s*(\S+)$", makefile, flags=re.M)
    objs = _objs(None, classifyGpu={"enabled": True, "variant": "fp16"})
    images = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o["spec"]["template"]["spec"]["containers"][
            0
        ]["image"]
        for o in objs
        if o["kind"] == "Deployment"
    }
    assert images["classify-cpu"] == f"{image}:{FACTS.version}"
    assert images["classify-gpu"] == f"{image}:{FACTS.version}-cuda"  # make image VARIANT=cuda
    assert "the name `make image` gives a local build" in notes()
    assert "gives a local build" not in notes({"image": {"registry": "registry.example.com"}})


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_chart_matches_the_image(scenario: str, tmp_path: Path) -> None:
    assert drift(_objs(scenario), FACTS, tmp_path) == []


def test_every_stage_and_the_broker_are_checked(tmp_path: Path) -> None:
    objs = _objs("trial-broker", secrets={"webhookUrls": ["https://hooks.example.com/x"]})
    components = {
        o["metadata"]["labels"]["app.kubernetes.io/component"] for o in objs if o["kind"] == "Deployment"
    }
    assert components == {"broker", "classify-cpu", "aggregate", "alerts-run", "notify"}
    assert drift(objs, FACTS, tmp_path) == []


def _set_args(args: list[str]) -> Callable[[dict[str, Any]], None]:
    def edit(c: dict[str, Any]) -> None:
        c["args"] = args

    return edit


def _set_port(c: dict[str, Any]) -> None:
    c["ports"][0]["containerPort"] = 9401


def _probe_path(c: dict[str, Any]) -> None:
    c["readinessProbe"]["httpGet"]["path"] = "/ready"


def _drop_data_volume(c: dict[str, Any]) -> None:
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/var/lib/newswatch"]


def _other_user(c: dict[str, Any]) -> None:
    c["securityContext"]["runAsUser"] = 1001


def _command(c: dict[str, Any]) -> None:
    c["command"] = ["newswatch-classify"]


def _loopback_metrics(c: dict[str, Any]) -> None:
    c["env"].append({"name": "NEWSWATCH_METRICS_HOST", "value": "127.0.0.1"})


@pytest.mark.parametrize(
    ("component", "edit", "expected"),
    [
        (
            "classify-cpu",
            _set_args(["--log-level", "INFO", "clasify"]),
            "rejected by the newswatch command line",
        ),
        ("alerts-run", _set_args(["--log-level", "INFO"]), "names no stage"),
        ("classify-cpu", _command, "is not in the image"),
        ("aggregate", _set_port, "the stage opens 9400, container port metrics is 9401"),
        ("notify", _probe_path, "probe path /ready answers 404"),
        ("aggregate", _drop_data_volume, "writes /var/lib/newswatch/aggregate"),
        ("alerts-run", _other_user, "runs as 1001:10001"),
        ("classify-cpu", _loopback_metrics, "metrics bind 127.0.0.1"),
        ("broker", _set_args(["broker", "--port", "9093"]), "broker listens on 9093"),
    ],
    ids=[
        "stage-command",
        "no-stage",
        "executable",
        "port",
        "probe-path",
        "volume",
        "user",
        "bind",
        "broker-port",
    ],
)
def test_drift_is_caught(
    component: str, edit: Callable[[dict[str, Any]], None], expected: str, tmp_path: Path
) -> None:
    objs = copy.deepcopy(_objs("trial-broker", secrets={"webhookUrls": ["https://hooks.example.com/x"]}))
    edit(_stage(objs, component))
    problems = drift(objs, FACTS, tmp_path)
    assert any(expected in p for p in problems), problems


def test_facts_come_from_the_runtime_stage(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM x AS build\nUSER 0\nEXPOSE 1\nFROM x\nENV A=1 \\\n    NEWSWATCH_METRICS_PORT=9400\n"
        'USER 10001:10001\nEXPOSE 9400\nENTRYPOINT ["newswatch"]\n'
    )
    facts = image_facts(dockerfile)
    assert isinstance(facts, ImageFacts)
    assert (facts.user, facts.exposed, facts.entrypoint) == ("10001:10001", {9400}, ("newswatch",))
    assert facts.env == {"A": "1", "NEWSWATCH_METRICS_PORT": "9400"}
