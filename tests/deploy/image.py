"""What the image offers, read from the sources it is built from, and the chart checked against it.

The image (``Dockerfile``) installs this project (``pyproject.toml``) and runs as the user its
runtime stage names. :func:`drift` lists every way a rendered chart asks for something that
image does not do: a command that is not one of its console scripts, arguments the
``newswatch`` command line rejects, a probe path the stage server does not serve, a
container port the stage's settings do not open, a path the stage writes that is not on a
writable volume under a read-only root filesystem, a user other than the image's. The
live counterpart, ``tests/image``, runs the same rendered manifests from the built image.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from newswatch.cli.main import build_parser
from newswatch.io.http import StageServer
from newswatch.settings import Settings, load_settings
from tests.support.chart import REPO

__all__ = ["ImageFacts", "drift", "image_facts", "served_statuses"]


@dataclass(frozen=True)
class ImageFacts:
    """What the runtime image offers, from ``Dockerfile`` and ``pyproject.toml``."""

    console_scripts: frozenset[str]
    entrypoint: tuple[str, ...]
    user: str
    exposed: frozenset[int]
    env: dict[str, str]
    version: str
    #: executables of the base image the chart may call besides the console scripts
    base_commands: frozenset[str] = frozenset({"python", "python3"})

    @property
    def uid_gid(self) -> tuple[int, int | None]:
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid) if gid else None


def image_facts(
    dockerfile: Path = REPO / "Dockerfile", pyproject: Path = REPO / "pyproject.toml"
) -> ImageFacts:
    """Parse the runtime stage (the last ``FROM``) of the Dockerfile and the project's scripts."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    runtime = lines[last_from:]
    user, entrypoint, exposed, env = "", (), set(), {}
    for line in runtime:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "USER":
            user = rest.strip()
        elif word == "ENTRYPOINT":
            entrypoint = tuple(re.findall(r'"([^"]*)"', rest))
        elif word == "EXPOSE":
            exposed |= {int(p.split("/")[0]) for p in rest.split()}
        elif word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    project = tomllib.loads(pyproject.read_text())["project"]
    return ImageFacts(
        console_scripts=frozenset(project.get("scripts", {})),
        entrypoint=entrypoint,
        user=user,
        exposed=frozenset(exposed),
        env=env,
        version=project["version"],
    )


def served_statuses(paths: set[str]) -> dict[str, int]:
    """HTTP status of each path on a real stage server (a fresh registry, ready and alive)."""

    async def run() -> dict[str, int]:
        server = StageServer(CollectorRegistry(), host="127.0.0.1", port=0)
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                out = {}
                for path in sorted(paths):
                    async with session.get(server.url + path) as resp:
                        out[path] = resp.status
                return out
        finally:
            await server.stop()

    return asyncio.run(run())


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("NEWSWATCH_")]:
            del os.environ[key]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _expand(arg: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_]\w*)\)", lambda m: env.get(m.group(1), "10.0.0.1"), arg)


def _under(path: str, mount: str) -> bool:
    return PurePosixPath(path) == PurePosixPath(mount) or PurePosixPath(mount) in PurePosixPath(path).parents


def drift(objs: list[dict[str, Any]], facts: ImageFacts, tmp: Path) -> list[str]:
    """Every mismatch between the rendered chart ``objs`` and the image; empty when they agree."""
    problems: list[str] = []
    kinds: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in objs:
        kinds.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    workloads = [(n, d["spec"]["template"]["spec"]) for n, d in kinds.get("Deployment", {}).items()]
    workloads += [(n, p["spec"]) for n, p in kinds.get("Pod", {}).items()]
    probe_paths: dict[str, set[str]] = {}
    for name, spec in workloads:
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            problems += _container_drift(where, spec, container, kinds, facts, tmp, probe_paths)
    if probe_paths:
        statuses = served_statuses(set(probe_paths))
        for path, users in sorted(probe_paths.items()):
            if statuses[path] != 200:
                problems.append(f"{', '.join(sorted(users))}: probe path {path} answers {statuses[path]}")
    return problems


def _container_drift(
    where: str,
    spec: dict[str, Any],
    container: dict[str, Any],
    kinds: dict[str, dict[str, dict[str, Any]]],
    facts: ImageFacts,
    tmp: Path,
    probe_paths: dict[str, set[str]],
) -> list[str]:
    problems: list[str] = []
    # the user: the image's own, numeric (runAsNonRoot can only be verified for a numeric USER)
    sc = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
    uid, gid = facts.uid_gid
    if sc.get("runAsUser") != uid or (gid is not None and sc.get("runAsGroup") != gid):
        problems.append(
            f"{where}: runs as {sc.get('runAsUser')}:{sc.get('runAsGroup')}, image USER {facts.user}"
        )

    env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
    command = container.get("command") or list(facts.entrypoint)
    argv = [_expand(str(a), env) for a in [*command, *(container.get("args") or [])]]
    if argv[0] not in facts.console_scripts | facts.base_commands:
        problems.append(f"{where}: command {argv[0]!r} is not in the image ({sorted(facts.console_scripts)})")
        return problems
    if argv[0] not in facts.console_scripts:
        return problems  # e.g. the helm test hook's python -c

    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            parsed = build_parser().parse_args(argv[1:])
    except SystemExit:
        error = usage.getvalue().strip().splitlines()[-1:] or [""]
        problems.append(f"{where}: `{' '.join(argv)}` is rejected by the newswatch command line: {error[0]}")
        return problems
    if getattr(parsed, "func", None) is None:
        problems.append(f"{where}: `{' '.join(argv)}` names no stage")
        return problems

    ports = {p.get("name"): int(p["containerPort"]) for p in container.get("ports", [])}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    writable = [p for p, m in mounts.items() if not m.get("readOnly") and "emptyDir" in volumes[m["name"]]]

    if parsed.command == "broker":
        if ports.get("kafka") != parsed.port:
            problems.append(
                f"{where}: broker listens on {parsed.port}, container port kafka is {ports.get('kafka')}"
            )
        if parsed.host in {"127.0.0.1", "localhost"}:
            problems.append(f"{where}: broker binds {parsed.host}, unreachable from other pods")
        return problems

    # the settings the process loads: the mounted file and the plain env (secrets only fill values in)
    config = env.get("NEWSWATCH_CONFIG")
    settings_file: Path | None = None
    if config:
        mount = next((p for p in mounts if _under(config, p)), None)
        cm_name = (volumes[mounts[mount]["name"]].get("configMap") or {}).get("name") if mount else None
        data = (kinds.get("ConfigMap", {}).get(cm_name or "") or {}).get("data") or {}
        key = str(PurePosixPath(config).relative_to(mount)) if mount else ""
        if key not in data:
            problems.append(f"{where}: NEWSWATCH_CONFIG={config} is not a key of a mounted ConfigMap")
        else:
            settings_file = tmp / f"{where.replace('/', '_')}.yaml"
            settings_file.write_text(str(data[key]))
    with _environ({k: v for k, v in env.items() if k.startswith("NEWSWATCH_") and k != "NEWSWATCH_CONFIG"}):
        settings: Settings = load_settings(settings_file)

    port = getattr(parsed, "metrics_port", None) or settings.metrics.port
    if ports.get("metrics") != port:
        problems.append(f"{where}: the stage opens {port}, container port metrics is {ports.get('metrics')}")
    if settings.metrics.host in {"127.0.0.1", "localhost"}:
        problems.append(f"{where}: metrics bind {settings.metrics.host}, so probes cannot reach them")
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = (container.get(kind) or {}).get("httpGet")
        if get is None:
            continue
        if ports.get(get["port"], get["port"]) != port:
            problems.append(f"{where}: {kind} asks port {get['port']}, the stage serves {port}")
        probe_paths.setdefault(get.get("path", "/"), set()).add(f"{where} {kind}")

    # with a read-only root filesystem, what the stage writes must be on a writable volume
    if sc.get("readOnlyRootFilesystem"):
        writes = ["/tmp"]
        if parsed.command == "aggregate":
            writes.append(settings.aggregate.data_dir)
        for path in writes:
            if not any(_under(path, w) for w in writable):
                problems.append(f"{where}: writes {path}, which is on the read-only root filesystem")
    models_dir = str(settings.models.dir) if settings.models.dir else ""
    if models_dir and parsed.command == "classify" and not any(_under(models_dir, p) for p in mounts):
        problems.append(f"{where}: models.dir {settings.models.dir} is not mounted")
    return problems
