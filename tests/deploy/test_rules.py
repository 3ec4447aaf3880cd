"""Prometheus rules: `promtool check rules` and `promtool test rules` (Debian's prometheus package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.chart import CHART

RULES = CHART / "rules" / "newswatch.rules.yaml"
RULE_TESTS = CHART / "rules" / "newswatch.rules.test.yaml"
PROMTOOL = shutil.which("promtool")


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is missing: run 'make system-deps' (Debian package prometheus)"
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def test_promtool_check_rules() -> None:
    proc = _promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests() -> None:
    proc = _promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_unit_test_and_a_runbook() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {"NewswatchWorkerDown", "NewswatchConsumerLagGrowing", "NewswatchNoData"} <= set(alerts)
    assert {"NewswatchDeadLetterRateHigh", "NewswatchWebhookFailures"} <= set(alerts)
    tests = yaml.safe_load(RULE_TESTS.read_text())
    fired = {
        case["alertname"]
        for t in tests["tests"]
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alerts) - fired == set()
    docs = (CHART.parents[1] / "docs" / "deploy.md").read_text().lower()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical")
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == f"runbook-{name.lower()}"
        assert f"### runbook: {name.lower()}" in docs, f"docs/deploy.md lacks a runbook section for {name}"


@pytest.mark.parametrize(
    ("expr", "ok"),
    [("sum(rate(newswatch_stream_messages_consumed_total[5m]))", True), ("sum(rate(x[5m])", False)],
)
def test_promtool_rejects_broken_rules(tmp_path: Path, expr: str, ok: bool) -> None:
    """The check really parses expressions (guards against a promtool that accepts anything)."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "a:b", "expr": expr}]}]}))
    assert (_promtool("check", "rules", str(path)).returncode == 0) is ok


AM_EXAMPLE = CHART / "rules" / "alertmanager-example.yaml"


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    amtool = shutil.which("amtool")
    assert amtool, "amtool is missing: run 'make system-deps' (Debian package prometheus-alertmanager)"
    return subprocess.run([amtool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_alertmanager_example_routes_every_alert_by_severity() -> None:
    """The documented Alertmanager routing is valid and pages exactly the critical alerts."""
    check = _amtool("check-config", str(AM_EXAMPLE))
    assert check.returncode == 0, check.stdout + check.stderr
    rules = yaml.safe_load(RULES.read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    for rule in alerts:
        severity = rule["labels"]["severity"]
        proc = _amtool(
            "config", "routes", "test", f"--config.file={AM_EXAMPLE}", f"alertname={rule['alert']}",
            f"severity={severity}", "namespace=nw",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        expected = "newswatch-pager" if severity == "critical" else "newswatch-team"
        assert proc.stdout.strip() == expected, (rule["alert"], proc.stdout)
    other = _amtool(
        "config", "routes", "test", f"--config.file={AM_EXAMPLE}", "alertname=Other", "severity=critical"
    )
    assert other.stdout.strip() == "default"
