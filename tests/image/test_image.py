"""The built image, run the way the Helm chart runs it (``make image-test``).

The chart is rendered with the image built here (``make image``) and every rendered
Deployment becomes a container of that image (see ``pods.py``): the embedded broker, then
classify, aggregate, alerts run and notify, each with the chart's command, environment,
non-root user, read-only root filesystem, volumes and limits, and each is waited for
through the chart's own startup and readiness probes. A few hundred real posts are
replayed by ``newswatch replay`` from the image, and the checks follow the data: scored
posts, windows, an alert on a window history with a surge, its webhook delivery; every
stage's ``/metrics``, ``/healthz`` and ``/readyz``; the chart's ``helm test`` Pod; a clean
exit on SIGTERM within the chart's grace period.

Skipped unless ``NEWSWATCH_TEST_IMAGE`` names the image (``make image-test`` sets it).
Start-up times and the image size are written to ``build/image/image-test.json``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from newswatch.io.kafka import make_consumer
from newswatch.models.artifacts import default_data_dir
from newswatch.settings import KafkaSettings
from tests.support.aggregate import surge_windows
from tests.support.chart import REPO, render
from tests.support.kafka import send_records
from tests.support.poll import wait_until_sync
from tests.support.receivers import Receiver

from .pods import Engine, Pod, network_addresses, pods_from_manifests

IMAGE = os.environ.get("NEWSWATCH_TEST_IMAGE", "")
STOCKNET = default_data_dir() / "stocknet_tweets" / "stocknet_tweets_2014_2016.csv"
POSTS = 300
STAGES = ("classify-cpu", "aggregate", "alerts-run", "notify")
SURGE_KEY = "Image test"
#: at most this long per probe here (the chart's startup budget is 5 min, far above what is needed)
PROBE_BUDGET_S = float(os.environ.get("NEWSWATCH_TEST_PROBE_BUDGET_S", "120"))

#: errors of a check that mean "not yet" (a container still starting)
NOT_YET = (OSError, ValueError, KeyError, RuntimeError)

pytestmark = [
    pytest.mark.skipif(not IMAGE, reason="set NEWSWATCH_TEST_IMAGE to a built image (make image-test)"),
    pytest.mark.timeout(900),
]


def _engine() -> Engine:
    name = os.environ.get("NEWSWATCH_TEST_ENGINE")
    if not name:
        docker_ok = shutil.which("docker") and (
            subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0
        )
        name = "docker" if docker_ok else "podman"
    env = dict(os.environ)
    if name == "podman" and not env.get("CONTAINERS_CONF") and shutil.which("runc"):
        env["CONTAINERS_CONF"] = str(REPO / ".ci" / "containers.conf")
    return Engine(name, env)


def chart_values(image: str, webhook_url: str) -> dict[str, Any]:
    """The values of the install under test: the image built here and a trial broker."""
    registry, _, rest = image.partition("/")
    repository, _, tag = rest.rpartition(":")
    return {
        "image": {"registry": registry, "repository": repository, "tag": tag, "pullPolicy": "Never"},
        "broker": {"enabled": True},
        "kafka": {"partitions": 2},
        "classifyCpu": {"replicaCount": 1},
        "secrets": {
            "webhookUrls": [webhook_url],
            "webhookSecret": "whsec_" + base64.b64encode(b"image-test-signing-key!!").decode(),
        },
        # quicker consumer groups and no notification grouping delay, through the chart's `config`
        "config": {
            "kafka": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
            # the receiver listens on the host, reached over plain http through the network gateway
            "notify": {"group_wait_s": 0, "webhook_allow_insecure": True},
        },
        "metrics": {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}},
    }


@dataclass
class Stack:
    engine: Engine
    network: str
    pods: dict[str, Pod]
    objs: list[dict[str, Any]]
    receiver: Receiver
    kafka: KafkaSettings
    settings_dir: Path
    figures: dict[str, Any]

    def logs(self, pod: Pod) -> str:
        return self.engine.logs(pod.name)

    def topic(self, name: str) -> str:
        cm = next(
            o for o in self.objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("settings")
        )
        return str(yaml.safe_load(cm["data"]["settings.yaml"])["topics"][name])


def _start(stack: Stack, pod: Pod) -> None:
    pod.started_at = time.monotonic()
    stack.engine(*pod.run_args)


def _wait_probes(stack: Stack, pod: Pod) -> None:
    """The chart's startup probe, then its readiness probe, within their failure budgets."""
    for kind in ("startupProbe", "readinessProbe"):
        probe = pod.container.get(kind)
        if probe is None:
            continue
        budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get(
            "failureThreshold", 3
        )

        def ok(probe: dict[str, Any] = probe) -> bool:
            state = stack.engine.inspect("container", pod.name)["State"]
            if not state.get("Running"):
                raise AssertionError(f"{pod.component} exited ({state.get('ExitCode')}): {stack.logs(pod)}")
            return pod.probe_ok(probe)

        try:
            wait_until_sync(ok, min(budget, PROBE_BUDGET_S), f"{pod.component} {kind}", ignore=NOT_YET)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.logs(pod)}") from None
    pod.ready_after_s = round(time.monotonic() - pod.started_at, 2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    engine = _engine()
    assert engine("image", "inspect", IMAGE, check=False), f"no image {IMAGE}: run make image"
    unique = uuid.uuid4().hex[:6]
    network = f"nwit-{unique}"
    engine("network", "create", network)
    receiver = Receiver().start_in_thread("0.0.0.0")  # reachable from the containers
    workdir = tmp_path_factory.mktemp("image")
    workdir.chmod(0o755)
    pods: list[Pod] = []
    try:
        gateway, addresses = network_addresses(engine, network)
        objs = [
            r.obj for r in render(chart_values(IMAGE, f"http://{gateway}:{receiver.port}/hooks/newswatch"))
        ]
        pods = pods_from_manifests(
            objs,
            network=network,
            addresses=addresses,
            prefix=f"nwit-{unique}",
            workdir=workdir,
            engine=engine.name,
        )
        by_component = {p.component: p for p in pods}
        broker = by_component["broker"]
        kafka_port = broker.port("kafka")
        stack = Stack(
            engine=engine,
            network=network,
            pods=by_component,
            objs=objs,
            receiver=receiver,
            kafka=KafkaSettings(bootstrap_servers=f"{broker.ip}:{kafka_port}", broker_compat="tansu"),
            settings_dir=workdir / "broker-settings",
            figures={"image": IMAGE, "engine": engine.name},
        )
        started = time.monotonic()
        _start(stack, broker)
        _wait_probes(stack, broker)
        for component in STAGES:
            _start(stack, by_component[component])
        for component in STAGES:
            _wait_probes(stack, by_component[component])
        stack.figures["all_ready_s"] = round(time.monotonic() - started, 2)
        stack.figures["ready_after_s"] = {p.component: p.ready_after_s for p in pods if p.ready_after_s}
        yield stack
        _write_figures(stack)
    finally:
        for pod in pods:
            engine("rm", "--force", pod.name, check=False, timeout=60)
        engine("network", "rm", network, check=False)
        receiver.close()


def _write_figures(stack: Stack) -> None:
    info = stack.engine.inspect("image", IMAGE)
    stack.figures["image_bytes"] = int(info.get("Size") or 0)
    out = REPO / "build" / "image"
    out.mkdir(parents=True, exist_ok=True)
    (out / "image-test.json").write_text(json.dumps(stack.figures, indent=2) + "\n")
    print(json.dumps(stack.figures))


def _records(kafka: KafkaSettings, topic: str, enough: Any, timeout_s: float) -> list[bytes]:
    """Values read from the start of ``topic`` until ``enough(values)`` or the deadline."""

    async def run() -> list[bytes]:
        consumer = make_consumer(kafka, topic, group_id=None)
        await consumer.start()
        values: list[bytes] = []
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not enough(values):
                batch = await consumer.getmany(timeout_ms=500)
                values += [r.value for records in batch.values() for r in records if r.value is not None]
        finally:
            await consumer.stop()
        return values

    return asyncio.run(run())


def _replay(stack: Stack, n: int) -> None:
    """``newswatch replay`` from the image, as a `kubectl run` pod would (same user, read-only root)."""
    classify = stack.pods["classify-cpu"]
    settings_mount = next(a for a in classify.run_args if a.endswith(":/etc/newswatch:ro"))
    hosts = [a for a in classify.run_args if a.startswith("--add-host=")]
    stack.engine(
        "run", "--rm", f"--network={stack.network}", *hosts, "--user=10001:10001", "--read-only",
        *(["--read-only-tmpfs=false"] if stack.engine.name == "podman" else []),
        "--tmpfs=/tmp:rw,mode=1777", "--cap-drop=ALL", "--security-opt=no-new-privileges",
        settings_mount, f"--volume={STOCKNET.parent}:/data:ro",
        "--env=NEWSWATCH_CONFIG=/etc/newswatch/settings.yaml", "--entrypoint=newswatch", IMAGE,
        "replay", f"/data/{STOCKNET.name}", "--retime", "--limit", str(n), "--quiet",
        timeout=300,
    )  # fmt: skip


def test_every_stage_is_ready_through_the_charts_probes(stack: Stack) -> None:
    assert set(stack.figures["ready_after_s"]) == {"broker", *STAGES}
    for component in STAGES:
        inspect = stack.engine.inspect("container", stack.pods[component].name)
        assert inspect["State"]["Running"], component
        assert inspect["Config"]["User"] == "10001:10001"


def test_replayed_posts_are_scored_and_become_windows(stack: Stack) -> None:
    started = time.monotonic()
    _replay(stack, POSTS)
    scored = _records(stack.kafka, stack.topic("scored"), lambda v: len(v) >= POSTS, 120)
    assert len(scored) >= POSTS
    windows = _records(
        stack.kafka, stack.topic("windows"), lambda v: any(json.loads(x).get("count", 0) > 0 for x in v), 120
    )
    stats = [json.loads(v) for v in windows]
    assert any(s["count"] > 0 and s["kind"] in {"topic", "entity", "source", "all"} for s in stats), stats[:3]
    stack.figures["replay_to_windows_s"] = round(time.monotonic() - started, 2)


def test_a_surge_raises_an_alert_that_notify_delivers(stack: Stack) -> None:
    send_records(stack.kafka, stack.topic("windows"), surge_windows(SURGE_KEY))
    alerts = _records(
        stack.kafka, stack.topic("alerts"), lambda v: any(SURGE_KEY.encode() in x for x in v), 120
    )
    assert any(SURGE_KEY.encode() in a for a in alerts)
    wait_until_sync(
        lambda: any(SURGE_KEY.encode() in b for b in stack.receiver.received),
        120,
        "webhook delivery",
        ignore=NOT_YET,
    )


@pytest.mark.parametrize("component", STAGES)
def test_metrics_healthz_readyz_answer_from_the_container(stack: Stack, component: str) -> None:
    pod = stack.pods[component]
    status, body = pod.get("metrics", "/metrics")
    assert status == 200 and "newswatch_" in body
    for path in ("/healthz", "/readyz"):
        assert pod.get("metrics", path)[0] == 200, path
    # the probes the chart declares are the ones answered here
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert pod.probe_ok(pod.container[kind]), kind


def test_helm_test_pod_passes_against_the_containers(stack: Stack) -> None:
    pod = stack.pods["test"]
    stack.engine(*pod.run_args)
    code = stack.engine("wait", pod.name, timeout=180)
    logs = stack.engine.logs(pod.name, tail_chars=20_000)
    assert code.strip().splitlines()[-1] == "0", logs
    assert logs.count("ok http://") == 2 * len(STAGES), logs


def test_stages_stop_cleanly_within_the_grace_period(stack: Stack) -> None:
    deployments = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o
        for o in stack.objs
        if o["kind"] == "Deployment"
    }
    codes = {}
    for component in STAGES:
        pod = stack.pods[component]
        grace = deployments[component]["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        started = time.monotonic()
        stack.engine("stop", f"--time={grace}", pod.name, timeout=grace + 30)
        took = time.monotonic() - started
        state = stack.engine.inspect("container", pod.name)["State"]
        codes[component] = (state["ExitCode"], round(took, 1))
    stack.figures["stop_exit_code_and_s"] = codes
    assert {c: code for c, (code, _) in codes.items()} == dict.fromkeys(STAGES, 0), codes
