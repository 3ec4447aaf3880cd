"""A canary secret (SASL password, webhook URL token, HMAC signing key) never leaks.

Checked in the places an operator or an attacker could read: Python logs at DEBUG (caplog),
the stderr of real stage subprocesses run with ``--log-level DEBUG``, ``/metrics`` served over
HTTP, every request a webhook receiver gets (body and headers), dead-letter records and
error messages.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from newswatch.demo.broker import free_port
from newswatch.io.kafka import KafkaIOError, create_topics
from newswatch.io.schemas import DeadLetter
from newswatch.metrics import Metrics
from newswatch.models.engine import ClassifierEngine
from newswatch.processes import stop_process
from newswatch.settings import Settings
from newswatch.stream.classify import ClassifyWorker
from tests.support.alerts import make_alert, produce_alerts
from tests.support.kafka import read_topic
from tests.support.poll import wait_until
from tests.support.receivers import Receiver
from tests.support.settings import settings_for

CANARY = "CANARYd41d8cd98f00b204e980"
WHSEC = "whsec_" + base64.b64encode(CANARY.encode()).decode()
FORMS = (CANARY, CANARY.lower(), base64.b64encode(CANARY.encode()).decode(), WHSEC)


def assert_clean(text: str | bytes, where: str) -> None:
    """No form of the canary (plain, lower case, base64, as a whsec key) in ``text``."""
    blob = text.decode(errors="replace") if isinstance(text, bytes) else text
    for form in FORMS:
        assert form not in blob, f"the canary leaked into {where}: ...{_around(blob, form)}..."


def _around(blob: str, form: str) -> str:
    i = blob.find(form)
    return blob[max(0, i - 80) : i + len(form) + 20]


def _sasl(settings: Settings) -> Settings:
    kafka = settings.kafka.model_copy(
        update={
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "newswatch",
            "sasl_plain_password": SecretStr(CANARY),  # model_copy does not validate
            "request_timeout_ms": 3_000,
        }
    )
    return settings.model_copy(update={"kafka": kafka})


@pytest.mark.fault
async def test_sasl_password_not_in_logs_errors_or_settings(
    bootstrap: str, unique: str, engine: ClassifierEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """The embedded broker speaks no SASL: starting fails, and the failure names no password."""
    settings = _sasl(settings_for(bootstrap, unique))
    assert_clean(repr(settings), "repr(settings)")
    assert_clean(str(settings.model_dump()), "settings.model_dump()")
    assert_clean(settings.model_dump_json(), "settings JSON")
    metrics = Metrics()
    caplog.set_level(logging.DEBUG)
    worker = ClassifyWorker(settings, metrics, engine=engine)
    with pytest.raises(KafkaIOError) as err:
        await worker.start()
    await worker.stop()
    assert_clean(str(err.value), "the error message")
    assert_clean(repr(err.value.__cause__), "the cause of the error")
    assert caplog.records, "DEBUG logging captured something"
    assert_clean(caplog.text, "log records")
    from prometheus_client import generate_latest

    assert_clean(generate_latest(metrics.registry), "metrics")


@pytest.mark.fault
def test_sasl_password_not_on_stage_stderr(bootstrap: str, unique: str, tmp_path: Path) -> None:
    """A real ``newswatch classify`` process at DEBUG that cannot authenticate: one line, no secret."""
    env = {
        **os.environ,
        "NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "NEWSWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "NEWSWATCH_KAFKA_SASL_MECHANISM": "PLAIN",
        "NEWSWATCH_KAFKA_SASL_PLAIN_USERNAME": "newswatch",
        "NEWSWATCH_KAFKA_SASL_PLAIN_PASSWORD": CANARY,
        "NEWSWATCH_KAFKA_REQUEST_TIMEOUT_MS": "3000",
        "NEWSWATCH_TOPICS_POSTS": f"posts-{unique}",
        "NEWSWATCH_CLASSIFY_GROUP_ID": f"classify-{unique}",
    }
    cmd = [
        sys.executable,
        "-m",
        "newswatch.cli.main",
        "--log-level",
        "DEBUG",
        "classify",
        "--metrics-port",
        "0",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out.decode(errors="replace")[-2000:]
    assert b"DEBUG" in proc.stderr, "the stage logged at DEBUG"
    assert_clean(out, "stdout/stderr of `newswatch classify`")
    last = proc.stderr.decode(errors="replace").strip().splitlines()[-1]
    assert last.startswith("newswatch classify: error:"), last
    assert b"Traceback" not in proc.stderr


@pytest.mark.fault
async def test_webhook_url_and_signing_key_not_leaked_by_notify(
    bootstrap: str, unique: str, receiver: Receiver, tmp_path: Path
) -> None:
    """A real ``newswatch notify`` process: canary in a webhook URL, its HMAC key and a dead sink's URL."""
    settings = settings_for(bootstrap, unique)
    topics = settings.topics
    dead_port = free_port()  # nothing listens there: connection refused, then dead-lettered
    sinks = [
        {"name": "hook", "type": "webhook", "url": f"{receiver.url}?token={CANARY}", "secret": WHSEC},
        {"name": "gone", "type": "slack", "url": f"http://127.0.0.1:{dead_port}/services/{CANARY}"},
    ]
    metrics_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")},
        "NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "NEWSWATCH_KAFKA_BROKER_COMPAT": "tansu",
        "NEWSWATCH_KAFKA_PARTITIONS": "2",
        "NEWSWATCH_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "NEWSWATCH_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
        "NEWSWATCH_TOPICS_ALERTS": topics.alerts,
        "NEWSWATCH_TOPICS_ALERTS_DEAD_LETTER": topics.alerts_dead_letter,
        "NEWSWATCH_NOTIFY_GROUP_ID": f"notify-{unique}",
        "NEWSWATCH_NOTIFY_DELIVERY_LOG_TOPIC": f"delivered-{unique}",
        "NEWSWATCH_NOTIFY_SINKS": json.dumps(sinks),
        "NEWSWATCH_NOTIFY_MAX_ATTEMPTS": "2",
        "NEWSWATCH_NOTIFY_BACKOFF_INITIAL_MS": "20",
        "NEWSWATCH_NOTIFY_BACKOFF_MAX_MS": "50",
        "NEWSWATCH_NOTIFY_GROUP_WAIT_S": "0.2",
        "NEWSWATCH_NOTIFY_TIMEOUT_S": "2",
        "NEWSWATCH_METRICS_PORT": str(metrics_port),
    }
    await create_topics(settings.kafka, [topics.alerts, topics.alerts_dead_letter])
    stderr = tmp_path / "notify.err"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "newswatch.cli.main", "--log-level", "DEBUG", "notify"],
            env=env,
            stdout=err,
            stderr=subprocess.STDOUT,
        )
    try:
        await produce_alerts(settings.kafka, topics.alerts, [make_alert(key="$NVDA")])
        await wait_until(lambda: receiver.accepted or proc.poll() is not None, 90, "the webhook delivery")
        assert proc.poll() is None, stderr.read_text()[-3000:]
        dlq = await read_topic(bootstrap, topics.alerts_dead_letter, lambda rs: len(rs) >= 1, timeout_s=60)
        assert dlq, "the alert for the unreachable sink was dead-lettered"
        metrics_text = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        stop_process(proc, timeout_s=20)

    assert b'newswatch_alerts_deliveries_total{outcome="ok",sink="hook"}' in metrics_text
    assert_clean(metrics_text, "/metrics of `newswatch notify`")
    for request in receiver.accepted:
        headers = request.headers
        assert request.path_qs.endswith(f"token={CANARY}")  # the URL itself is where the token belongs
        assert_clean(request.body, "a webhook payload")
        assert_clean(json.dumps({k: v for k, v in headers.items() if k.lower() != "host"}), "webhook headers")
        assert "webhook-signature" in {k.lower() for k in headers}
    for r in dlq:
        assert r.value is not None
        letter = DeadLetter.from_json(r.value)
        assert letter.reason and letter.detail
        assert_clean(letter.detail, "a dead-letter detail")
        assert_clean(r.value, "a dead-letter record")
    log_text = stderr.read_bytes()
    assert b"DEBUG" in log_text
    assert_clean(log_text, "stderr of `newswatch notify`")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
        return body
