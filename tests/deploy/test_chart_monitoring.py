"""The chart's prometheus-operator objects: rendered only where their CRDs are served (or
forced), and the PrometheusRule built from rules/newswatch.rules.yaml with the job and the
runbook base URL from values (issue 18 point 8)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.support.chart import CHART, load_values, notes, render, validation_errors

RULES = CHART / "rules" / "newswatch.rules.yaml"
RULE_TESTS = CHART / "rules" / "newswatch.rules.test.yaml"
DEFAULT_BASE = "https://github.com/newswatch/newswatch/blob/main/docs/deploy.md"
SM = "monitoring.coreos.com/v1/ServiceMonitor"
PR = "monitoring.coreos.com/v1/PrometheusRule"
#: values that move both: another job name and a runbook wiki
JOB = "kubernetes-newswatch"
BASE = "https://wiki.example.com/ops/newswatch"
CUSTOM: dict[str, Any] = {"metrics": {"job": JOB, "prometheusRule": {"runbookBaseUrl": BASE}}}
#: every label matcher on `job` in PromQL (and in annotation text)
JOB_MATCHER = re.compile(r'job\s*(=~|!=|!~|=)\s*\\?"([^"\\]*)\\?"')


def _monitoring_kinds(values: dict[str, Any] | None = None, api_versions: tuple[str, ...] = ()) -> set[str]:
    kinds = {o.kind for o in render(values, api_versions=api_versions)}
    return kinds & {"ServiceMonitor", "PrometheusRule"}


def _rule(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return next(o.obj for o in render(values) if o.kind == "PrometheusRule")


# --- gating on the CRDs ------------------------------------------------------------------------


def test_plain_helm_template_renders_no_operator_objects_and_says_why() -> None:
    """No --api-versions (a cluster without the CRDs, or `helm template`): nothing to fail the install."""
    assert _monitoring_kinds() == set()
    text = notes(api_versions=())
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert f"does not serve monitoring.coreos.com/v1/{kind}" in text
        assert f"--api-versions monitoring.coreos.com/v1/{kind}" in text
    assert "through ServiceMonitor" not in text
    # the rest of the release is all there
    assert {o.kind for o in render(api_versions=())} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "NetworkPolicy",
    }


@pytest.mark.parametrize(
    ("api_versions", "expected"),
    [
        ((SM,), {"ServiceMonitor"}),
        ((PR,), {"PrometheusRule"}),
        ((SM, PR), {"ServiceMonitor", "PrometheusRule"}),
        (("monitoring.coreos.com/v1",), set()),  # the group alone does not say which kinds exist
        (("monitoring.coreos.com/v1alpha1/ServiceMonitor",), set()),
    ],
    ids=["servicemonitor", "prometheusrule", "both", "group-only", "other-version"],
)
def test_each_object_needs_its_own_kind(api_versions: tuple[str, ...], expected: set[str]) -> None:
    assert _monitoring_kinds(api_versions=api_versions) == expected
    text = notes(api_versions=api_versions)
    for kind in {"ServiceMonitor", "PrometheusRule"} - expected:
        assert f"does not serve monitoring.coreos.com/v1/{kind}" in text
    for kind in expected:
        assert f"does not serve monitoring.coreos.com/v1/{kind}" not in text


def test_force_renders_them_without_the_api_and_they_validate() -> None:
    forced = {"metrics": {"serviceMonitor": {"force": True}, "prometheusRule": {"force": True}}}
    objs = [o for o in render(forced, api_versions=()) if o.kind in ("ServiceMonitor", "PrometheusRule")]
    assert {o.kind for o in objs} == {"ServiceMonitor", "PrometheusRule"}
    assert {o.kind: validation_errors(o.obj) for o in objs} == {"ServiceMonitor": [], "PrometheusRule": []}
    assert "does not serve" not in notes(forced, api_versions=())
    only_rule = {"metrics": {"prometheusRule": {"force": True}}}
    assert _monitoring_kinds(only_rule) == {"PrometheusRule"}


def test_enabled_false_wins_over_the_api_and_force() -> None:
    off = {
        "metrics": {
            "serviceMonitor": {"enabled": False, "force": True},
            "prometheusRule": {"enabled": False, "force": True},
        }
    }
    assert _monitoring_kinds(off, api_versions=(SM, PR)) == set()
    assert "does not serve" not in notes(off, api_versions=())


# --- job and runbook base URL from values ------------------------------------------------------


def test_the_rules_file_uses_only_the_job_selector_the_chart_replaces() -> None:
    """The template replaces `job="newswatch"` and keeps each runbook anchor; a rule written any
    other way (job=~, another job, a runbook without an anchor) would escape the values."""
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    # what the template rewrites: the expressions and the annotations (not the file's comments)
    text = yaml.safe_dump([[r["expr"], r.get("annotations", {})] for r in rules])
    assert set(JOB_MATCHER.findall(text)) == {("=", "newswatch")}
    selectors = [s for r in rules for s in re.findall(r"(?:newswatch_\w+|up)\{[^}]*\}", str(r["expr"]))]
    assert selectors and all('job="newswatch"' in s for s in selectors)
    for r in rules:
        if "alert" in r:
            assert r["annotations"]["runbook_url"] == f"{DEFAULT_BASE}#runbook-{r['alert'].lower()}"


def _expected_groups(job: str, base: str) -> list[dict[str, Any]]:
    """The rules file with the substitution done here, independently of the template."""
    source = yaml.safe_load(RULES.read_text())
    for group in source["groups"]:
        for rule in group["rules"]:
            rule["expr"] = rule["expr"].replace('job="newswatch"', f'job="{job}"')
            for key, text in rule.get("annotations", {}).items():
                rule["annotations"][key] = (
                    text.replace(DEFAULT_BASE, base)
                    if key == "runbook_url"
                    else text.replace('job="newswatch"', f'job="{job}"')
                )
    groups: list[dict[str, Any]] = source["groups"]
    return groups


def test_defaults_render_the_rules_file_unchanged() -> None:
    assert _rule()["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_job_and_runbook_base_come_from_values() -> None:
    job, base = JOB, BASE
    groups = _rule(CUSTOM)["spec"]["groups"]
    assert groups == _expected_groups(job, base)
    assert groups != yaml.safe_load(RULES.read_text())["groups"]
    text = yaml.safe_dump(groups)
    assert "newswatch/blob/main" not in text
    assert set(JOB_MATCHER.findall(text)) == {("=", job)}
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    assert len(alerts) == 9
    for r in alerts:
        assert r["annotations"]["runbook_url"] == f"{base}#runbook-{r['alert'].lower()}"
    # a base with a trailing slash or a path is taken as written
    other = _rule({"metrics": {"prometheusRule": {"runbookBaseUrl": "https://runbooks.example.com/nw/"}}})
    urls = {
        r["annotations"]["runbook_url"] for g in other["spec"]["groups"] for r in g["rules"] if "alert" in r
    }
    assert "https://runbooks.example.com/nw/#runbook-newswatchworkerdown" in urls


def test_the_scrape_job_the_rules_select_is_the_one_the_servicemonitor_sets() -> None:
    for values, job in (({}, "newswatch"), (CUSTOM, "kubernetes-newswatch")):
        monitor = next(o.obj for o in render(values) if o.kind == "ServiceMonitor")
        relabel = monitor["spec"]["endpoints"][0]["relabelings"]
        assert {"targetLabel": "job", "replacement": job} in relabel
        assert "jobLabel" not in monitor["spec"]  # nameOverride no longer moves the job
        assert f'(job="{job}")' in notes(values)
    renamed = next(o.obj for o in render({"nameOverride": "nw2"}) if o.kind == "ServiceMonitor")
    assert {"targetLabel": "job", "replacement": "newswatch"} in renamed["spec"]["endpoints"][0][
        "relabelings"
    ]


def test_the_dashboard_configmap_selects_the_same_job() -> None:
    def dashboard(values: dict[str, Any]) -> str:
        cm = next(o.obj for o in render(values) if o.kind == "ConfigMap" and o.name.endswith("-dashboard"))
        return str(cm["data"]["newswatch.json"])

    source = (CHART / "dashboards" / "newswatch.json").read_text()
    selectors = source.count('job=\\"newswatch\\"')
    assert selectors > 10
    custom = dashboard(CUSTOM)
    assert 'job=\\"newswatch\\"' not in custom
    assert custom.count('job=\\"kubernetes-newswatch\\"') == selectors
    assert custom.replace("kubernetes-newswatch", "newswatch") == source
    assert dashboard({}) == source


@pytest.mark.parametrize(
    "values",
    [
        {"metrics": {"job": 'new"swatch'}},
        {"metrics": {"job": ""}},
        {"metrics": {"prometheusRule": {"runbookBaseUrl": "wiki/newswatch"}}},
        {"metrics": {"prometheusRule": {"runbookBaseUrl": "https://wiki.example.com/nw#anchor"}}},
        {"metrics": {"serviceMonitor": {"force": "yes"}}},
    ],
)
def test_schema_rejects_bad_monitoring_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render(values)


PROMTOOL = shutil.which("promtool")


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is missing: run 'make system-deps' (Debian package prometheus)"
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def test_rendered_rules_with_other_values_pass_the_promtool_unit_tests(tmp_path: Path) -> None:
    """The rule file a Prometheus without the operator loads (`spec` of the rendered PrometheusRule)
    passes `promtool check rules`, and the rules' unit tests, moved to the other job and base,
    pass against it: the substitution changed names, not behaviour."""
    job, base = JOB, BASE
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(_rule(CUSTOM)["spec"], sort_keys=False))
    proc = _promtool("check", "rules", str(rules), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tests = (
        RULE_TESTS.read_text()
        .replace('job="newswatch"', f'job="{job}"')
        .replace('job=\\"newswatch\\"', f'job=\\"{job}\\"')
        .replace("job: newswatch", f"job: {job}")
        .replace(DEFAULT_BASE, base)
    )
    spec = yaml.safe_load(tests)
    spec["rule_files"] = [rules.name]
    (tmp_path / "rules.test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = _promtool("test", "rules", "rules.test.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    # and the unchanged tests fail against it: the job really moved
    unchanged = yaml.safe_load(RULE_TESTS.read_text())
    unchanged["rule_files"] = [rules.name]
    (tmp_path / "unchanged.test.yaml").write_text(yaml.safe_dump(unchanged, sort_keys=False))
    assert _promtool("test", "rules", "unchanged.test.yaml", cwd=tmp_path).returncode != 0


def test_the_scenarios_still_render_them_where_the_crds_are() -> None:
    for scenario in ("default", "gpu", "prometheus-other-namespace"):
        assert _monitoring_kinds(load_values(scenario), api_versions=(SM, PR)) == {
            "ServiceMonitor",
            "PrometheusRule",
        }


def test_the_documented_scrape_config_is_valid_and_loads_the_rendered_rules(tmp_path: Path) -> None:
    """docs/deploy.md, "Monitoring without the Prometheus Operator": its scrape config passes
    `promtool check config` with the rules file it names (here, rendered with other values),
    keeps job = metrics.job, selects the chart's metrics Services and adds the labels the
    rules group by."""
    docs = (CHART.parents[1] / "docs" / "deploy.md").read_text()
    section = docs.split("### Monitoring without the Prometheus Operator", 1)[1].split("\n## ", 1)[0]
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))  # type: ignore[union-attr]
    job = config["scrape_configs"][0]
    assert job["job_name"] == "newswatch"
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"namespace", "component"} <= targets
    keep = job["relabel_configs"][0]
    service = next(o.obj for o in render() if o.kind == "Service" and o.name.endswith("-aggregate"))
    labels = service["metadata"]["labels"]
    assert keep["regex"] == f"{labels['newswatch.io/metrics']};{labels['app.kubernetes.io/instance']}"
    assert service["spec"]["ports"][0]["name"] == "metrics"
    rules = tmp_path / "newswatch.rules.yaml"
    rules.write_text(yaml.safe_dump(_rule(CUSTOM)["spec"], sort_keys=False))
    config["rule_files"] = [str(rules)]
    # Debian's prometheus is built without Kubernetes service discovery, so its promtool rejects
    # kubernetes_sd_configs; the rest (relabel rules, rule file) is checked with static targets
    assert job.pop("kubernetes_sd_configs")[0]["role"] == "endpoints"
    job["static_configs"] = [{"targets": ["10.0.0.7:9400"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for value in ("metrics.job", "metrics.prometheusRule.runbookBaseUrl", "metrics.serviceMonitor.force"):
        assert value in docs, value
    for value in ("extraVolumes", "extraVolumeMounts", "extraEnv", "ssl_cafile", "--api-versions"):
        assert value in docs, value
