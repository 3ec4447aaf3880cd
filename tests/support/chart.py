"""Render and validate the Helm chart with real tools (shared by the chart tests).

* Rendering: ``helm-python-sdk`` binds Helm v4's own Go engine (``libhelm_c``) and renders
  offline, exactly like ``helm template`` (values coalescing, ``values.schema.json``,
  ``required``/``fail``, sprig functions); no cluster is contacted.
* Linting: ``helm-sdkpy`` (Helm v4 Go library, Python >= 3.12, run from ``.venv-helm``)
  and ``helm-python-sdk``'s lint with values.
* Validation: ``kubernetes-validate`` (the Kubernetes OpenAPI schemas, strict: unknown
  fields fail) for core kinds; the CRD schemas in ``crd_schemas/`` for ServiceMonitor,
  PrometheusRule and ScaledObject.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml
from helm_python import _native

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "newswatch"
CI_VALUES = CHART / "ci"
HELM_VENV_PYTHON = REPO / ".venv-helm" / "bin" / "python"
CRD_SCHEMAS = Path(__file__).resolve().parent / "crd_schemas"
#: Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema set bundled.
K8S_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
RELEASE = "nw"
NAMESPACE = "newswatch"

#: What ``--api-versions`` tells Helm on a cluster with the prometheus-operator CRDs (what
#: ``helm install`` discovers there); ``render`` and ``notes`` assume it unless told otherwise.
OPERATOR_API_VERSIONS = (
    "monitoring.coreos.com/v1",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)

CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_v1_prometheusrule.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.json",
}


@dataclass(frozen=True)
class Rendered:
    """One object from a rendered template."""

    template: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


def load_values(name: str | None) -> dict[str, Any]:
    """Values of a ``ci/<name>-values.yaml`` scenario (``None``: the chart defaults only)."""
    if name is None:
        return {}
    data = yaml.safe_load((CI_VALUES / f"{name}-values.yaml").read_text())
    return dict(data or {})


def render(
    values: dict[str, Any] | None = None, api_versions: tuple[str, ...] = OPERATOR_API_VERSIONS
) -> list[Rendered]:
    """Render the chart offline with Helm's engine; every YAML document of every template.

    ``api_versions`` is ``helm template --api-versions`` (``.Capabilities.APIVersions``): by
    default a cluster with the prometheus-operator CRDs; ``()`` is a plain ``helm template``.
    Results are cached per values (the chart does not change during a test run); callers
    get their own copies.
    """
    return copy.deepcopy(_render(json.dumps(values or {}, sort_keys=True), tuple(api_versions)))


def _render_manifests(values: dict[str, Any], api_versions: tuple[str, ...]) -> dict[str, str]:
    """``helm template``: template path -> text. helm-python-sdk's ``Chart.render`` has no
    ``api_versions`` argument, but its native ``helm_render`` takes it (the C SDK's render
    options: name, namespace, is_install, api_versions, ...), so this calls that directly."""
    chart = helm.Chart.load(CHART)
    opts = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True, "api_versions": list(api_versions)}
    rendered = _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
    manifests: dict[str, str] = json.loads(rendered)
    return manifests


@functools.lru_cache(maxsize=32)
def _render(values_json: str, api_versions: tuple[str, ...]) -> list[Rendered]:
    manifests = _render_manifests(json.loads(values_json), api_versions)
    out: list[Rendered] = []
    for template, text in sorted(manifests.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append(Rendered(template, doc))
    return out


def notes(values: dict[str, Any] | None = None, api_versions: tuple[str, ...] = OPERATOR_API_VERSIONS) -> str:
    """The rendered NOTES.txt (``api_versions`` as in ``render``)."""
    manifests = _render_manifests(values or {}, tuple(api_versions))
    return next(text for template, text in manifests.items() if template.endswith("NOTES.txt"))


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """Schema errors of one object: Kubernetes OpenAPI (strict) or the vendored CRD schema."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_KINDS:
        schema = json.loads((CRD_SCHEMAS / CRD_KINDS[key]).read_text())
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    errors: list[str] = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"k8s {version}: {exc.message} at {'/'.join(map(str, exc.path))}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"k8s {version}: no schema for {key}: {exc}")
    return errors


def lint_with_values(values: dict[str, Any]) -> dict[str, Any]:
    """``helm lint --strict`` with values through helm-python-sdk."""
    return helm.lint(CHART, values=values, strict=True, namespace=NAMESPACE)


def lint_with_helm_sdkpy(chart_dir: Path) -> dict[str, Any]:
    """``helm lint`` through helm-sdkpy in the Python 3.12 venv ``.venv-helm`` (``make helm-venv``)."""
    if not HELM_VENV_PYTHON.exists():
        raise RuntimeError(
            f"{HELM_VENV_PYTHON} is missing: run 'make helm-venv' (needs python3.12 for helm-sdkpy)"
        )
    code = (
        "import asyncio, json, sys, helm_sdkpy as h\n"
        "cfg = h.Configuration(namespace=sys.argv[2])\n"
        "print(json.dumps(asyncio.run(h.Lint(cfg).run(sys.argv[1]))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(
        [str(HELM_VENV_PYTHON), "-c", code, str(chart_dir), NAMESPACE],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"helm-sdkpy lint crashed: {proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
