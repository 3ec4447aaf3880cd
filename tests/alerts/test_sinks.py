"""Every sink against a real HTTP server on loopback: signatures, payload shapes, secrets kept secret."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from newswatch.alerts.delivery import deliver
from newswatch.alerts.exceptions import DeliveryError, SinkConfigError
from newswatch.alerts.sinks import Notification, build_sink
from newswatch.alerts.sinks.webhook import sign, verify
from newswatch.metrics import Metrics
from newswatch.settings.alerts import NotifySettings, SinkSettings
from tests.support.alerts import make_alert
from tests.support.receivers import Receiver

SECRET = "whsec_" + base64.b64encode(b"newswatch-test-signing-key-32by").decode()


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The example of the Standard Webhooks specification (secret, id, timestamp, payload, signature).
    got = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


async def test_webhook_signature_round_trip(receiver: Receiver) -> None:
    sink = build_sink(SinkSettings(name="hook", type="webhook", url=receiver.url, secret=SECRET))
    note = Notification(alerts=(make_alert(),), group="entity")
    async with sink:
        assert await sink.send(note) == 200
    [req] = receiver.accepted
    assert req.headers["webhook-id"] == note.id
    assert verify(SECRET, req.headers, req.body)
    assert not verify(SECRET, req.headers, req.body + b" ")  # tampered body
    assert not verify("whsec_" + base64.b64encode(b"another-key").decode(), req.headers, req.body)
    assert not verify(
        SECRET, req.headers, req.body, now=int(req.headers["webhook-timestamp"]) + 3600
    )  # replay
    payload = req.json()
    assert (
        payload["type"] == "newswatch.alerts" and payload["id"] == note.id and payload["status"] == "firing"
    )
    [alert] = payload["alerts"]
    assert alert["idempotency_key"] == make_alert().idempotency_key
    assert alert["observed"] == 120.0 and alert["baseline"] == 14.5 and len(alert["examples"]) == 3
    assert alert["dashboard_url"].startswith("http://grafana.local/")


async def test_slack_block_kit_payload(receiver: Receiver) -> None:
    sink = build_sink(SinkSettings(name="slack", type="slack", url=receiver.url))
    alerts = tuple(make_alert(key=f"$T{i}") for i in range(12))
    async with sink:
        await sink.send(Notification(alerts=alerts, group="semis"))
    body = receiver.accepted[0].json()
    assert isinstance(body["text"], str) and "12 alerts" in body["text"]
    blocks = body["blocks"]
    assert 1 <= len(blocks) <= 50
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["type"] == "plain_text"
    assert len(blocks[0]["text"]["text"]) <= 150
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) == 10 and all(
        b["text"]["type"] == "mrkdwn" and len(b["text"]["text"]) <= 3000 for b in sections
    )
    assert any(b["type"] == "context" and "2 more" in b["elements"][0]["text"] for b in blocks)
    [actions] = [b for b in blocks if b["type"] == "actions"]
    button = actions["elements"][0]
    assert (
        button["type"] == "button"
        and button["text"]["type"] == "plain_text"
        and button["url"].startswith("http")
    )
    for b in blocks:
        assert set(b) <= {"type", "text", "elements", "fields", "block_id", "accessory"}


async def test_teams_adaptive_card_payload(receiver: Receiver) -> None:
    sink = build_sink(SinkSettings(name="teams", type="teams", url=receiver.url))
    async with sink:
        await sink.send(Notification(alerts=(make_alert(),), group="entity"))
    body = receiver.accepted[0].json()
    assert body["type"] == "message"
    [att] = body["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4" and card["$schema"].startswith("http")
    assert card["body"][0]["type"] == "TextBlock" and "$NVDA" in card["body"][0]["text"]
    facts = card["body"][1]
    assert facts["type"] == "FactSet" and all(set(f) == {"title", "value"} for f in facts["facts"])
    assert card["actions"][0]["type"] == "Action.OpenUrl" and card["actions"][0]["url"].startswith("http")


async def test_pagerduty_trigger_and_resolve_share_dedup_key(receiver: Receiver) -> None:
    receiver.behaviour = lambda n: 202
    sink = build_sink(
        SinkSettings(name="pd", type="pagerduty", url=receiver.url, secret="R0UTINGKEY0123456789012345678901")
    )
    fired, resolved = make_alert(severity="critical"), make_alert(status="resolved", severity="critical")
    async with sink:
        assert await sink.send(Notification(alerts=(fired,), group="entity")) == 202
        assert await sink.send(Notification(alerts=(resolved,), group="entity")) == 202
    trigger, resolve = (r.json() for r in receiver.accepted)
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == fired.fingerprint
    assert trigger["routing_key"] == resolve["routing_key"] == "R0UTINGKEY0123456789012345678901"
    p = trigger["payload"]
    assert {"summary", "source", "severity"} <= set(p)
    assert len(p["summary"]) <= 1024 and p["severity"] in {"critical", "error", "warning", "info"}
    datetime.fromisoformat(p["timestamp"])
    assert p["custom_details"]["examples"][0]["id"] == "$NVDA-p1"
    assert trigger["links"][0]["href"].startswith("http") and set(resolve) == {
        "routing_key",
        "event_action",
        "dedup_key",
    }


async def test_alertmanager_postable_alerts_shape(receiver: Receiver) -> None:
    sink = build_sink(SinkSettings(name="am", type="alertmanager", url=receiver.url.removesuffix("/hook")))
    async with sink:
        await sink.send(Notification(alerts=(make_alert(), make_alert(key="$AMD")), group="entity"))
    req = receiver.accepted[0]
    assert req.path == "/api/v2/alerts"
    alerts = req.json()
    assert isinstance(alerts, list) and len(alerts) == 2
    for a in alerts:
        assert a["labels"]["alertname"] == "NewswatchAnomaly"
        assert all(isinstance(v, str) and v for v in a["labels"].values())
        assert all(isinstance(v, str) for v in a["annotations"].values())
        assert datetime.fromisoformat(a["startsAt"]) < datetime.fromisoformat(a["endsAt"])
        assert a["generatorURL"].startswith("http")


def test_sink_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SinkConfigError, match="needs a url"):
        build_sink(SinkSettings(name="s", type="slack"))
    with pytest.raises(SinkConfigError, match="routing key"):
        build_sink(SinkSettings(name="pd", type="pagerduty"))
    with pytest.raises(SinkConfigError, match="cannot read the url file"):
        build_sink(SinkSettings(name="s", type="slack", url_file=tmp_path / "missing"))
    with pytest.raises(SinkConfigError, match="base64"):
        build_sink(SinkSettings(name="w", type="webhook", url="https://x", secret="whsec_not base64!"))
    (tmp_path / "url").write_text("http://127.0.0.1:1/from-file\n")
    sink = build_sink(SinkSettings(name="s", type="slack", url_file=tmp_path / "url"))
    assert "from-file" not in repr(sink)


async def test_canary_secret_never_leaks(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    """A canary in every URL and secret: absent from logs, metrics, errors, reprs and (but for PagerDuty's
    routing_key, where the API requires it) every payload."""
    canary = "CANARY7f3a9c1e"
    caplog.set_level(logging.DEBUG)
    receiver.behaviour = lambda n: 500 if n % 2 == 0 else 200
    whsec = "whsec_" + base64.b64encode(canary.encode() * 2).decode()
    specs = [
        SinkSettings(name="hook", type="webhook", url=f"{receiver.url}?token={canary}", secret=whsec),
        SinkSettings(name="slack", type="slack", url=f"{receiver.url}/{canary}"),
        SinkSettings(name="teams", type="teams", url=f"{receiver.url}/{canary}"),
        SinkSettings(name="pd", type="pagerduty", url=f"{receiver.url}?k={canary}", secret=canary),
        SinkSettings(name="am", type="alertmanager", url=f"{receiver.url}/{canary}"),
    ]
    settings = NotifySettings(sinks=tuple(specs), max_attempts=2, backoff_initial_ms=1, backoff_max_ms=2)
    metrics = Metrics()
    assert canary not in repr(settings) and canary not in str(settings.model_dump())
    note = Notification(alerts=(make_alert(),), group="entity")
    for spec in specs:
        receiver.attempts = 0
        sink = build_sink(spec)
        assert canary not in repr(sink)
        async with sink:
            outcome = await deliver(sink, note, settings, metrics)
            assert outcome.ok and outcome.attempts == 2
            assert canary not in outcome.error
            with pytest.raises(DeliveryError) as err:  # even number → 500
                await sink.send(note)
            assert canary not in str(err.value)
    # Unreachable host: the connection error text would contain the URL.
    dead = build_sink(SinkSettings(name="dead", type="slack", url=f"http://127.0.0.1:9/{canary}"))
    async with dead:
        with pytest.raises(DeliveryError) as err:
            await dead.send(note)
    assert canary not in str(err.value) and err.value.retriable
    # The test receiver's own access log (aiohttp.access) shows its URLs; newswatch's records must not.
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp.access")]
    assert ours and not any(canary in m for m in ours)
    assert canary.encode() not in generate_latest(metrics.registry)
    for r in receiver.accepted:
        body = r.json()
        if isinstance(body, dict) and body.get("routing_key") == canary:
            body = {k: v for k, v in body.items() if k != "routing_key"}
        assert canary not in str(body), r.path
        assert all(canary not in v for k, v in r.headers.items() if k.lower() != "host")


async def test_alerts_test_command_reports_the_response(receiver: Receiver, tmp_path: Path) -> None:
    config = tmp_path / "newswatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {"notify": {"sinks": [{"name": "ops", "type": "webhook", "url": receiver.url, "secret": SECRET}]}}
        )
    )
    env = {**os.environ, "NEWSWATCH_CONFIG": str(config)}

    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "newswatch.cli.main", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, _ = await cli("alerts", "test", "--sink", "ops")
    assert code == 0 and "delivered (HTTP 200" in out
    [req] = receiver.accepted
    payload = req.json()
    assert (
        payload["test"] is True
        and payload["alerts"][0]["key"] == "$TEST"
        and verify(SECRET, req.headers, req.body)
    )
    code, _, err = await cli("alerts", "test", "--sink", "nope")
    assert (
        code == 2
        and err.strip().count("\n") == 0
        and "no sink named 'nope'" in err
        and "Traceback" not in err
    )
    receiver.behaviour = lambda n: 400
    code, _, err = await cli("alerts", "test", "--sink", "ops")
    assert code == 1 and "HTTP 400" in err and "Traceback" not in err
