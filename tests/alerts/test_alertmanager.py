"""Integration: the Alertmanager sink against a real ``prometheus-alertmanager`` on loopback."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from newswatch.alerts.incidents import IncidentBook
from newswatch.alerts.sinks import Notification, build_sink
from newswatch.demo.broker import free_port
from newswatch.settings.alerts import SinkSettings
from tests.support.alerts import MIN, incident_note, make_alert, nvda_incident, resolved

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
assert BINARY is not None, "prometheus-alertmanager is not installed: run `make system-deps` (make test does)"

CONFIG = """\
route:
  receiver: blackhole
  group_by: ['group']
receivers:
  - name: blackhole
"""


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[str]:
    """A real Alertmanager with a temp config and storage, no clustering."""
    assert BINARY is not None
    (tmp_path / "am.yml").write_text(CONFIG)
    port = free_port()
    proc = subprocess.Popen(
        [
            BINARY,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "am.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as s:
            while True:
                assert proc.poll() is None, (tmp_path / "am.log").read_text()
                try:
                    async with s.get(f"{url}/-/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "alertmanager did not become ready"
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _alerts(url: str, fingerprint: str, active: bool = True) -> list[dict[str, Any]]:
    params = {
        "filter": f'fingerprint="{fingerprint}"',
        "active": str(active).lower(),
        "inhibited": "true",
        "silenced": "true",
    }
    async with aiohttp.ClientSession() as s, s.get(f"{url}/api/v2/alerts", params=params) as r:
        assert r.status == 200
        body: list[dict[str, Any]] = await r.json()
        return body


async def test_alert_is_posted_to_and_read_back_from_real_alertmanager(alertmanager: str) -> None:
    fired = make_alert(key="$NVDA", severity="critical")
    sink = build_sink(SinkSettings(name="am", type="alertmanager", url=alertmanager))
    async with sink:
        assert await sink.send(Notification(alerts=(fired,), group="semis")) == 200
        [got] = await _alerts(alertmanager, fired.fingerprint)
        assert got["labels"]["key"] == "$NVDA" and got["labels"]["severity"] == "critical"
        assert got["labels"]["alertname"] == "NewswatchAnomaly" and got["labels"]["group"] == "semis"
        assert "$NVDA" in got["annotations"]["summary"] and got["status"]["state"] == "active"
        assert got["generatorURL"] == fired.dashboard_url
        resolved = make_alert(key="$NVDA", severity="critical", status="resolved")
        await sink.send(Notification(alerts=(resolved,), group="semis"))
        # A resolved alert has endsAt in the past: it leaves the active set.
        assert await _alerts(alertmanager, fired.fingerprint) == []


async def test_real_alertmanager_gets_the_incident_and_its_resolution_closes_a_standalone_page(
    alertmanager: str,
) -> None:
    """The opening alert paged alone, the others joined later: the incident's resolution closes it."""
    events = nvda_incident()
    book = IncidentBook(gap_ms=10 * MIN)
    [only] = book.observe(events[:1]).loose  # paged alone, as an ordinary notification
    assert not book.observe(events[1:]).pages, "the later members join silently"
    [page] = book.observe([resolved(a, 5) for a in events]).pages
    groups = {a.fingerprint: a.kind for a in page.alerts}  # what the router gives without notify.groups
    sink = build_sink(SinkSettings(name="am", type="alertmanager", url=alertmanager))
    async with sink:
        assert await sink.send(Notification(alerts=(only,), group="entity")) == 200
        assert [a["labels"]["key"] for a in await _alerts(alertmanager, only.fingerprint)] == ["$NVDA"]
        firing = incident_note()  # an incident paged as one notification: every alert, annotated
        assert await sink.send(firing) == 200
        got = await _alerts(alertmanager, events[2].fingerprint)
        assert got[0]["annotations"]["incident_lead"] == "entity $NVDA"
        assert "explains 88 %" in got[0]["annotations"]["incident_summary"]
        note = Notification(alerts=page.alerts, group="incident", incident=page.summary(groups))
        assert await sink.send(note) == 200
        for a in events:
            assert await _alerts(alertmanager, a.fingerprint) == [], f"{a.key} {a.signal} still active"
