"""Run the chart's rendered Deployments as containers of the built image (podman or docker).

Each Deployment's pod becomes one container started the way the kubelet would start it: the
container's command and args (``$(VAR)`` expanded from its env), its environment (plain
values, ``secretKeyRef`` from the rendered Secret, ``fieldRef: status.podIP``), the user and
group of its security context, a read-only root filesystem, dropped capabilities, no
privilege escalation, the engine's default seccomp profile (RuntimeDefault), its memory and
CPU limits, and every volume it mounts: ``configMap`` and ``secret`` volumes as read-only
bind mounts of the rendered data, ``emptyDir`` volumes as fresh host directories (mode 0777,
group ``fsGroup``), which is what the kubelet mounts.
Anything in a pod that this translation does not know fails loudly instead of being
skipped, so the containers cannot silently differ from what the chart asks for.

Containers join one user-defined network with fixed addresses; Service names resolve
through ``--add-host`` (the broker's Service points at the broker container).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Engine", "Pod", "pods_from_manifests"]

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G)?$")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _bytes(quantity: str) -> int:
    m = _QUANTITY.match(str(quantity))
    if not m or m.group(2) == "m":
        raise ValueError(f"not a byte quantity: {quantity!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _cpus(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


class Engine:
    """The container engine CLI (``podman`` or ``docker``)."""

    def __init__(self, name: str, env: dict[str, str] | None = None) -> None:
        if shutil.which(name) is None:
            raise RuntimeError(f"{name} is not installed (make image-deps)")
        self.name = name
        self.env = env

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run(
            [self.name, *args], capture_output=True, text=True, timeout=timeout, env=self.env, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc.stdout.strip()

    def logs(self, container: str, tail_chars: int = 3000) -> str:
        """stdout and stderr of a container, interleaved."""
        proc = subprocess.run(
            [self.name, "logs", container],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            env=self.env,
            check=False,
        )
        return proc.stdout[-tail_chars:]

    def inspect(self, what: str, name: str) -> dict[str, Any]:
        data = json.loads(self(what, "inspect", name))
        return dict(data[0] if isinstance(data, list) else data)


@dataclass
class Pod:
    """One Deployment's pod as a container: the ``run`` arguments and where it answers."""

    name: str
    component: str
    container: dict[str, Any]
    ip: str
    run_args: list[str]
    argv: list[str]
    started_at: float = 0.0
    ready_after_s: float | None = None
    hosts: dict[str, str] = field(default_factory=dict)

    def port(self, name_or_number: str | int) -> int:
        """A container port by name (as probes name it) or number."""
        if isinstance(name_or_number, int):
            return name_or_number
        for port in self.container.get("ports", []):
            if port.get("name") == name_or_number:
                return int(port["containerPort"])
        raise AssertionError(f"{self.component}: probe names port {name_or_number!r}, the container has none")

    def probe_ok(self, probe: dict[str, Any]) -> bool:
        """Run one Kubernetes probe (httpGet or tcpSocket) against the container once."""
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://{self.ip}:{self.port(get['port'])}{get.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    return 200 <= int(resp.status) < 400
            except OSError:
                return False
        if "tcpSocket" in probe:
            import socket

            try:
                with socket.create_connection((self.ip, self.port(probe["tcpSocket"]["port"])), timeout):
                    return True
            except OSError:
                return False
        raise AssertionError(f"{self.component}: probe kind not supported here: {sorted(probe)}")

    def get(self, port: str | int, path: str, timeout_s: float = 5) -> tuple[int, str]:
        """``GET`` a path on a container port: status and body."""
        url = f"http://{self.ip}:{self.port(port)}{path}"
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status), resp.read().decode()


def _secret_data(secret: dict[str, Any] | None) -> dict[str, str]:
    if secret is None:
        return {}
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def pods_from_manifests(
    objs: list[dict[str, Any]],
    *,
    network: str,
    addresses: Iterator[str],
    prefix: str,
    workdir: Path,
    engine: str,
) -> list[Pod]:
    """The run arguments of every Deployment and Pod in ``objs`` (the broker first, bare Pods last)."""
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in objs:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    # (Deployments' pod templates, then bare Pods such as the `helm test` hook)
    workloads = [
        (d["metadata"], d["spec"]["template"]["spec"]) for d in by_kind.get("Deployment", {}).values()
    ]
    workloads.sort(key=lambda w: w[0]["labels"]["app.kubernetes.io/component"] != "broker")
    workloads += [(p["metadata"], p["spec"]) for p in by_kind.get("Pod", {}).values()]
    pods = [
        _pod(
            meta,
            spec,
            by_kind,
            network=network,
            ip=next(addresses),
            prefix=prefix,
            workdir=workdir,
            engine=engine,
        )
        for meta, spec in workloads
    ]
    # Services resolve to their pod's address (every Service here selects one component)
    hosts: dict[str, str] = {}
    for svc in by_kind.get("Service", {}).values():
        component = svc["spec"]["selector"].get("app.kubernetes.io/component")
        for pod in pods:
            if pod.component == component:
                hosts[svc["metadata"]["name"]] = pod.ip
    for pod in pods:
        pod.hosts = hosts
        pod.run_args[1:1] = [f"--add-host={name}:{ip}" for name, ip in sorted(hosts.items())]
    return pods


def _pod(
    metadata: dict[str, Any],
    spec: dict[str, Any],
    by_kind: dict[str, dict[str, dict[str, Any]]],
    *,
    network: str,
    ip: str,
    prefix: str,
    workdir: Path,
    engine: str,
) -> Pod:
    component = metadata["labels"]["app.kubernetes.io/component"]
    (container,) = spec["containers"]  # one container per pod in this chart
    assert not spec.get("initContainers"), f"{component}: init containers are not run here"
    pod_sc = spec.get("securityContext") or {}
    sc = {**pod_sc, **(container.get("securityContext") or {})}
    name = f"{prefix}-{component}"
    args: list[str] = ["run", "--detach", f"--name={name}", f"--hostname={name}", f"--network={network}"]
    args.append(f"--ip={ip}")

    # security context
    user = sc.get("runAsUser")
    group = sc.get("runAsGroup")
    assert user is not None, f"{component}: no runAsUser; the image's USER would decide"
    args.append(f"--user={user}:{group}" if group is not None else f"--user={user}")
    if pod_sc.get("fsGroup") is not None:
        args.append(f"--group-add={pod_sc['fsGroup']}")
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
        if engine == "podman":  # podman would add its own writable /tmp, /var/tmp, /run
            args.append("--read-only-tmpfs=false")
    for cap in (sc.get("capabilities") or {}).get("drop", []):
        args.append(f"--cap-drop={cap}")
    for cap in (sc.get("capabilities") or {}).get("add", []):
        args.append(f"--cap-add={cap}")
    if sc.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    assert not sc.get("privileged"), f"{component}: privileged containers are not run here"
    seccomp = (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    assert seccomp == "RuntimeDefault", f"{component}: seccomp {seccomp}, not the engine's default"

    # resources (limits are what the kernel enforces)
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        args.append(f"--memory={_bytes(limits['memory'])}")
    if "cpu" in limits:
        args.append(f"--cpus={_cpus(limits['cpu'])}")

    # environment
    secrets = by_kind.get("Secret", {})
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(str(item["value"]), env)
            continue
        ref = item.get("valueFrom") or {}
        if "secretKeyRef" in ref:
            key_ref = ref["secretKeyRef"]
            data = _secret_data(secrets.get(key_ref["name"]))
            if key_ref["key"] in data:
                env[item["name"]] = data[key_ref["key"]]
            else:
                assert key_ref.get("optional"), f"{component}: secret key {key_ref} is missing"
        elif ref.get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[item["name"]] = ip
        else:
            raise AssertionError(f"{component}: env {item['name']} comes from {ref}, not supported here")
    for key, value in env.items():
        args.append(f"--env={key}={value}")

    # volumes
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    config_maps = by_kind.get("ConfigMap", {})
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        path = mount["mountPath"]
        assert "subPath" not in mount, f"{component}: subPath mounts are not run here"
        if "emptyDir" in volume:
            # the kubelet makes an emptyDir a fresh host directory, mode 0777, group-owned by
            # fsGroup with the setgid bit; sizeLimit is enforced by eviction, not by the mount
            if volume["emptyDir"].get("medium") not in (None, ""):
                raise AssertionError(f"{component}: emptyDir medium {volume['emptyDir']['medium']}")
            host_dir = workdir / f"{component}-{mount['name']}"
            host_dir.mkdir(parents=True, exist_ok=True)
            if pod_sc.get("fsGroup") is not None:
                os.chown(host_dir, -1, int(pod_sc["fsGroup"]))
            host_dir.chmod(0o2777 if pod_sc.get("fsGroup") is not None else 0o777)
            args.append(f"--volume={host_dir}:{path}:rw")
        elif "configMap" in volume or "secret" in volume:
            if "configMap" in volume:
                source = config_maps.get(volume["configMap"]["name"])
                assert source is not None, f"{component}: no ConfigMap {volume['configMap']}"
                data = {k: str(v) for k, v in (source.get("data") or {}).items()}
            else:
                source = secrets.get(volume["secret"]["secretName"])
                assert source is not None or volume["secret"].get("optional"), f"{component}: no Secret"
                data = _secret_data(source)
            host_dir = workdir / f"{component}-{mount['name']}"
            host_dir.mkdir(parents=True, exist_ok=True)
            host_dir.chmod(0o755)
            for key, value in data.items():
                (host_dir / key).write_text(value)
                (host_dir / key).chmod(0o644)
            assert mount.get("readOnly"), f"{component}: {path} is writable, expected read-only"
            args.append(f"--volume={host_dir}:{path}:ro")
        else:
            raise AssertionError(f"{component}: volume {mount['name']} kind not run here: {sorted(volume)}")

    command = [_expand(a, env) for a in container.get("command") or []]
    argv = command + [_expand(str(a), env) for a in container.get("args") or []]
    assert command, f"{component}: no command; the chart always names it"
    args += [f"--entrypoint={command[0]}", container["image"], *argv[1:]]
    return Pod(name=name, component=component, container=container, ip=ip, run_args=args, argv=argv)


def network_addresses(engine: Engine, network: str) -> tuple[str, Iterator[str]]:
    """The gateway of a user-defined network and free-looking addresses in its upper half."""
    info = engine.inspect("network", network)
    if "subnets" in info:  # podman
        subnet = info["subnets"][0]
        net = ipaddress.ip_network(subnet["subnet"])
        gateway = subnet.get("gateway") or str(next(net.hosts()))
    else:  # docker
        cfg = info["IPAM"]["Config"][0]
        net = ipaddress.ip_network(cfg["Subnet"])
        gateway = cfg.get("Gateway") or str(next(net.hosts()))
    hosts = list(net.hosts())
    return gateway, (str(h) for h in hosts[len(hosts) // 2 :])
