"""Integration: the Alertmanager sink against a real ``prometheus-alertmanager`` on loopback."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from newswatch.alerts.exceptions import DeliveryError
from newswatch.alerts.incidents import IncidentBook
from newswatch.alerts.notify import Notifier
from newswatch.alerts.sinks import Notification, build_sink
from newswatch.alerts.sinks.alertmanager import EXPIRY_RESENDS, AlertmanagerSink
from newswatch.demo.broker import free_port
from newswatch.settings import KafkaSettings, Settings, TopicSettings
from newswatch.settings.alerts import NotifySettings, SinkSettings
from tests.support.alerts import MIN, incident_note, make_alert, nvda_incident, produce_alerts, pump, resolved
from tests.support.poll import wait_until

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
assert BINARY is not None, "prometheus-alertmanager is not installed: run `make system-deps` (make test does)"

CONFIG = """\
route:
  receiver: blackhole
  group_by: ['group']
receivers:
  - name: blackhole
"""


@contextlib.asynccontextmanager
async def running_alertmanager(home: Path) -> AsyncIterator[str]:
    """A real Alertmanager with its config and storage under ``home``, no clustering; its base URL."""
    assert BINARY is not None
    home.mkdir(parents=True, exist_ok=True)
    (home / "am.yml").write_text(CONFIG)
    port = free_port()
    proc = subprocess.Popen(
        [
            BINARY,
            f"--config.file={home / 'am.yml'}",
            f"--storage.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(home / "am.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:

            async def ready() -> bool:
                assert proc.poll() is None, (home / "am.log").read_text()
                try:
                    async with s.get(f"{url}/-/ready") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, 20, "alertmanager ready", interval_s=0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[str]:
    """A real Alertmanager with a temp config and storage, no clustering."""
    async with running_alertmanager(tmp_path / "am") as url:
        yield url


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


# -- the API's contract: re-send, endsAt, stable labels, HA, restart -----------------------------

#: The tests' resend interval: an active alert ends EXPIRY_RESENDS × 0.5 s = 2 s ahead.
RESEND_S = 0.5


def am_sink(*urls: str, resend_s: float = RESEND_S) -> AlertmanagerSink:
    """An Alertmanager sink posting to every one of ``urls`` (replicas), re-sending every ``resend_s``."""
    first, *more = urls
    spec = SinkSettings(
        name="am", type="alertmanager", url=first, urls=tuple(more), resend_interval_s=resend_s
    )
    sink = build_sink(spec)
    assert isinstance(sink, AlertmanagerSink)
    return sink


def _ends(alert: dict[str, Any]) -> float:
    return datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")).timestamp()


async def _severities(url: str, fingerprint: str) -> list[str]:
    return sorted(a["labels"]["severity"] for a in await _alerts(url, fingerprint))


def _shows(url: str, fingerprint: str, severities: list[str]) -> Any:
    """A check for wait_until: Alertmanager ``url`` holds exactly these active labelsets of the alert."""

    async def check() -> bool:
        return await _severities(url, fingerprint) == severities

    return check


async def _resent_after(url: str, witness: str, since: float) -> bool:
    """Whether Alertmanager got the still-active ``witness`` alert again with an end beyond ``since``."""
    got = await _alerts(url, witness)
    return bool(got) and _ends(got[0]) > since


async def test_fire_escalate_resolve_leaves_no_alert_active(alertmanager: str) -> None:
    """Severity is a label: an escalation resolves the warning labelset, the resolve every labelset."""
    warning = make_alert(key="$NVDA", severity="warning")
    critical = replace(warning, severity="critical", score=0.97)
    done = replace(critical, status="resolved", start_ms=warning.start_ms + 5 * MIN)
    # What the engine emits: a warning firing whose resolve reports the peak severity, critical.
    amd = make_alert(key="$AMD", severity="warning")
    amd_done = replace(amd, status="resolved", severity="critical")
    witness = make_alert(key="$TSM")  # stays active: its re-sends show the sink re-sending
    note = lambda a: Notification(alerts=(a,), group="entity")  # noqa: E731
    async with am_sink(alertmanager) as sink:
        assert await sink.send(note(witness)) == 200
        assert await sink.send(note(warning)) == 200
        await wait_until(_shows(alertmanager, warning.fingerprint, ["warning"]), 5, "the warning alert")
        assert await sink.send(note(critical)) == 200
        await wait_until(_shows(alertmanager, warning.fingerprint, ["critical"]), 5, "only the critical one")
        [got] = await _alerts(alertmanager, warning.fingerprint)
        assert got["annotations"]["runbook_url"].endswith("docs/alerts.md#runbook-newswatchanomaly")
        assert got["annotations"]["description"].startswith("Critical anomaly on entity $NVDA: volume is 120")
        assert await sink.send(note(done)) == 200
        await wait_until(_shows(alertmanager, warning.fingerprint, []), 5, "no $NVDA alert active")
        assert await sink.send(note(amd)) == 200
        assert await sink.send(note(amd_done)) == 200
        await wait_until(_shows(alertmanager, amd.fingerprint, []), 5, "no $AMD alert active")
        # A re-send after the resolves does not bring them back.
        since = _ends((await _alerts(alertmanager, witness.fingerprint))[0])
        await wait_until(lambda: _resent_after(alertmanager, witness.fingerprint, since), 10, "a re-send")
        assert await _alerts(alertmanager, warning.fingerprint) == []
        assert await _alerts(alertmanager, amd.fingerprint) == []
        assert [a["labels"]["key"] for a in sink.active()] == ["$TSM"]


async def test_active_alerts_are_resent_and_expire_on_their_own_once_the_notifier_stops(
    alertmanager: str,
) -> None:
    fired = make_alert(key="$NVDA")
    async with am_sink(alertmanager) as sink:
        assert await sink.send(Notification(alerts=(fired,), group="entity")) == 200
        [first] = await _alerts(alertmanager, fired.fingerprint)
        assert _ends(first) == pytest.approx(time.time() + EXPIRY_RESENDS * RESEND_S, abs=1.0)

        async def outlived_its_first_end() -> bool:
            got = await _alerts(alertmanager, fired.fingerprint)
            assert got, "the alert expired while the sink was re-sending it"
            return time.time() > _ends(first) + RESEND_S and _ends(got[0]) > _ends(first)

        await wait_until(outlived_its_first_end, 10, "the re-sent alert to outlive its first endsAt")
    stopped = time.monotonic()
    horizon = EXPIRY_RESENDS * RESEND_S
    await wait_until(_shows(alertmanager, fired.fingerprint, []), horizon + 5, "the alert to expire")
    assert time.monotonic() - stopped <= horizon + 1.0, "expired later than 4 resend intervals"


class _FlakyProxy:
    """A replica's address that forwards to a real Alertmanager, or answers 503 while ``down``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.down = False
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        body = await request.read()
        headers = {"Content-Type": "application/json"}
        async with (
            aiohttp.ClientSession() as s,
            s.post(self.target + request.path, data=body, headers=headers) as r,
        ):
            return web.Response(status=r.status, body=await r.read())


@contextlib.asynccontextmanager
async def flaky_proxy(target: str) -> AsyncIterator[_FlakyProxy]:
    proxy = _FlakyProxy(target)
    app = web.Application()
    app.router.add_post("/api/v2/alerts", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    proxy.url = f"http://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        await runner.cleanup()


async def test_every_replica_gets_the_alerts_and_one_that_missed_some_catches_up(tmp_path: Path) -> None:
    fired = make_alert(key="$NVDA", severity="critical")
    late = make_alert(key="$AMD")
    note = lambda a: Notification(alerts=(a,), group="entity")  # noqa: E731
    async with (
        running_alertmanager(tmp_path / "a") as am1,
        running_alertmanager(tmp_path / "b") as am2,
        flaky_proxy(am2) as replica2,
    ):
        async with am_sink(am1, replica2.url) as sink:
            assert sink.replicas == 2
            assert await sink.send(note(fired)) == 200
            for am in (am1, am2):
                await wait_until(_shows(am, fired.fingerprint, ["critical"]), 5, f"the alert on {am}")
            replica2.down = True
            # Delivered: one replica accepted. The other misses a firing and a resolve.
            assert await sink.send(note(late)) == 200
            assert await sink.send(note(resolved(fired, 5))) == 200
            assert await _severities(am1, late.fingerprint) == ["warning"]
            assert await _alerts(am1, fired.fingerprint) == []
            assert await _severities(am2, fired.fingerprint) == ["critical"]
            replica2.down = False
            await wait_until(
                _shows(am2, late.fingerprint, ["warning"]), 10, "replica 2 to get the late alert"
            )
            await wait_until(_shows(am2, fired.fingerprint, []), 10, "replica 2 to get the missed resolve")
        # No replica accepts: not delivered, retried by the caller, and no URL in the error; the
        # alert is held all the same and reaches the first replica that comes back.
        replica2.down = True
        dead = f"http://127.0.0.1:{free_port()}"
        tsm = make_alert(key="$TSM")
        async with am_sink(replica2.url, dead) as sink:
            with pytest.raises(DeliveryError) as err:
                await sink.send(note(tsm))
            assert err.value.retriable
            assert "replica 1 of 2" in str(err.value) and "replica 2 of 2" in str(err.value)
            assert "127.0.0.1" not in str(err.value)
            assert [a["labels"]["key"] for a in sink.active()] == ["$TSM"], "held for the next re-send"
            replica2.down = False
            await wait_until(
                _shows(am2, tsm.fingerprint, ["warning"]), 10, "the alert once a replica is back"
            )


async def test_a_restarted_notifier_takes_back_the_alerts_it_had_active(alertmanager: str) -> None:
    """The incident log and the delivery log give a new sink the alerts its predecessor had active."""
    events = nvda_incident()
    book = IncidentBook(gap_ms=10 * MIN)
    [page] = book.observe(events).pages
    assert not book.observe([resolved(events[3], 5)]).pages, "a member resolves while others fire: silent"
    groups = {a.fingerprint: a.kind for a in page.alerts}  # the router's groups without notify.groups
    async with am_sink(alertmanager) as before:
        note = Notification(alerts=page.alerts, group="incident", incident=page.summary(groups))
        assert await before.send(note) == 200
    acknowledged = {a.idempotency_key for a in page.alerts}  # what the delivery log holds for this sink
    assert am_sink(alertmanager).resume(set().__contains__, book, lambda a: a.kind) == 0
    after = am_sink(alertmanager)
    assert after.resume(acknowledged.__contains__, book, lambda a: a.kind) == len(events)
    first = {a.fingerprint: _ends((await _alerts(alertmanager, a.fingerprint))[0]) for a in events}
    async with after:

        async def all_resent() -> bool:
            for a in events:
                got = await _alerts(alertmanager, a.fingerprint)
                assert len(got) == 1, f"{a.key} {a.signal}: {len(got)} active labelsets"
                if _ends(got[0]) <= first[a.fingerprint]:
                    return False
            return True

        await wait_until(all_resent, 10, "every alert of the incident re-sent by the new sink")
        [got] = await _alerts(alertmanager, events[2].fingerprint)
        assert got["annotations"]["incident_lead"] == "entity $NVDA"
        [page] = book.observe([resolved(a, 6) for a in events]).pages
        note = Notification(alerts=page.alerts, group="incident", incident=page.summary(groups))
        assert await after.send(note) == 200
        for a in events:
            assert await _alerts(alertmanager, a.fingerprint) == [], f"{a.key} {a.signal} still active"
        assert after.active() == []


async def test_an_alert_another_notifier_replica_resolved_is_no_longer_resent(alertmanager: str) -> None:
    """After a rebalance the replica that delivered an alert keeps re-sending it, until the delivery
    log shows its resolve acknowledged for the sink, whichever replica delivered it."""
    fired, witness = make_alert(key="$NVDA"), make_alert(key="$TSM")
    note = lambda a: Notification(alerts=(a,), group="entity")  # noqa: E731
    acknowledged: set[str] = set()  # the delivery log's keys of this sink
    async with am_sink(alertmanager) as old_owner:
        assert old_owner.resume(acknowledged.__contains__) == 0
        for a in (fired, witness):
            assert await old_owner.send(note(a)) == 200
            acknowledged.add(a.idempotency_key)
        done = resolved(fired, 5)
        async with am_sink(alertmanager) as new_owner:  # the partition moved: another replica resolves
            assert await new_owner.send(note(done)) == 200
        acknowledged.add(done.idempotency_key)
        await wait_until(lambda: len(old_owner.active()) == 1, 10, "the old owner to drop the alert")
        assert [a["labels"]["key"] for a in old_owner.active()] == ["$TSM"]
        horizon = EXPIRY_RESENDS * RESEND_S
        await wait_until(_shows(alertmanager, fired.fingerprint, []), horizon + 5, "no $NVDA alert active")
        since = _ends((await _alerts(alertmanager, witness.fingerprint))[0])
        await wait_until(lambda: _resent_after(alertmanager, witness.fingerprint, since), 10, "a re-send")
        assert await _alerts(alertmanager, fired.fingerprint) == []


async def test_a_restarted_notifier_keeps_re_sending_through_kafka(
    kafka: KafkaSettings, topics: TopicSettings, unique: str, alertmanager: str
) -> None:
    """Through the real notifier and broker: the restarted notifier takes the incident's alerts back
    from its incident and delivery logs, keeps them active, and resolves them."""
    sink = SinkSettings(name="am", type="alertmanager", url=alertmanager, resend_interval_s=RESEND_S)
    notify = NotifySettings(
        group_id=f"notify-{unique}",
        delivery_log_topic=f"delivered-{unique}",
        incident_log_topic=f"incidents-{unique}",
        sinks=(sink,),
        group_wait_s=0.2,
        timeout_s=2.0,
        backoff_initial_ms=20,
        backoff_max_ms=200,
    )
    settings = Settings(kafka=kafka, topics=topics, notify=notify)
    events = nvda_incident()

    def held(notifier: Notifier) -> list[dict[str, Any]]:
        am = notifier.sinks["am"]
        assert isinstance(am, AlertmanagerSink)
        return am.active()

    async with Notifier(settings) as notifier:
        await produce_alerts(kafka, topics.alerts, events)
        await pump(notifier, lambda: len(held(notifier)) == len(events))
    async with Notifier(settings) as notifier:
        assert len(held(notifier)) == len(events), "taken back from the incident and delivery logs"
        since = time.time()

        async def all_resent() -> bool:
            for a in events:
                got = await _alerts(alertmanager, a.fingerprint)
                if len(got) != 1 or _ends(got[0]) <= since + EXPIRY_RESENDS * RESEND_S:
                    return False
            return True

        await wait_until(all_resent, 10, "every alert re-sent by the restarted notifier")
        await produce_alerts(kafka, topics.alerts, [resolved(a, 5) for a in events])
        await pump(notifier, lambda: held(notifier) == [])
    for a in events:
        assert await _alerts(alertmanager, a.fingerprint) == [], f"{a.key} {a.signal} still active"


def test_replica_urls_are_checked_like_url_and_only_for_alertmanager() -> None:
    secret = "http://10.0.0.7:9093/SECRETPATH"
    spec = {"name": "am", "type": "alertmanager", "url": "http://127.0.0.1:9093"}
    with pytest.raises(ValidationError) as err:
        SinkSettings.model_validate({**spec, "urls": ["http://127.0.0.1:9094", secret]})
    assert "urls[1] of sink 'am': http:// is allowed only to loopback" in str(err.value)
    assert "SECRETPATH" not in str(err.value)
    assert len(SinkSettings.model_validate({**spec, "urls": [secret], "allow_insecure": True}).urls) == 1
    with pytest.raises(ValidationError, match="is for alertmanager sinks only"):
        SinkSettings.model_validate({**spec, "type": "webhook", "urls": ["http://127.0.0.1:9094"]})
    with pytest.raises(ValidationError):
        SinkSettings.model_validate({**spec, "resend_interval_s": 0})
    sink = build_sink(SinkSettings.model_validate({**spec, "url": None, "urls": ["http://127.0.0.1:9094/"]}))
    assert isinstance(sink, AlertmanagerSink) and sink.replicas == 1
