"""Issue 19, F10 and F9 (sink half): sink URLs are checked when the settings load, and a sink
variable that is not JSON is one line naming it (exit 2), never a traceback or a retry loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from newswatch.alerts.delivery import deliver
from newswatch.alerts.exceptions import SinkConfigError
from newswatch.alerts.sinks import Notification, build_sink
from newswatch.errors import ConfigError
from newswatch.settings import Settings, load_settings
from newswatch.settings.alerts import NotifySettings, SinkSettings
from tests.support.alerts import make_alert
from tests.support.receivers import Receiver

CANARY = "CANARY5e1f"
BAD_URLS = {
    "ftp": f"ftp://files.example.com/{CANARY}",
    "file": f"file:///etc/{CANARY}",
    "no scheme": f"hooks.example.com/{CANARY}",
    "plain http": f"http://hooks.example.com/{CANARY}",
    "no host": f"https:///{CANARY}",
}
GOOD_URLS = [
    "https://hooks.slack.com/services/T0/B0/x",
    "http://127.0.0.1:9/hook",
    "http://127.8.0.1/hook",
    "http://[::1]:8080/hook",
    "http://localhost:9093",
]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "newswatch.cli.main", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("url", list(BAD_URLS.values()), ids=list(BAD_URLS))
def test_a_bad_sink_url_fails_at_settings_load(url: str) -> None:
    sinks = [{"name": "chat", "type": "slack", "url": url}]
    with pytest.raises(ConfigError) as err:
        load_settings(notify={"sinks": sinks})
    message = str(err.value)
    assert "notify.sinks.0" in message and "url of sink 'chat'" in message
    assert CANARY not in message and "\n" not in message
    with pytest.raises(ConfigError) as err:
        load_settings(notify={"webhook_urls": [url]})
    assert "webhook_urls[0] (NEWSWATCH_NOTIFY_WEBHOOK_URLS)" in str(err.value)
    assert CANARY not in str(err.value)
    # Built directly, the pydantic error does not repeat the input either (hide_input_in_errors).
    with pytest.raises(ValidationError) as verr:
        Settings(notify={"sinks": sinks})
    assert CANARY not in str(verr.value) and "url of sink 'chat'" in str(verr.value)


@pytest.mark.parametrize("url", GOOD_URLS)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    settings = load_settings(
        notify={"sinks": [{"name": "s", "type": "webhook", "url": url}], "webhook_urls": [url]}
    )
    assert len(settings.notify.sinks) == 1 and len(settings.notify.webhook_urls) == 1


def test_allow_insecure_admits_plain_http_per_sink() -> None:
    """An in-cluster Alertmanager without TLS, said explicitly."""
    url = "http://alertmanager.monitoring:9093"
    with pytest.raises(ConfigError, match="allow_insecure"):
        load_settings(notify={"sinks": [{"name": "am", "type": "alertmanager", "url": url}]})
    spec = {"name": "am", "type": "alertmanager", "url": url, "allow_insecure": True}
    assert load_settings(notify={"sinks": [spec]}).notify.sinks[0].allow_insecure
    with pytest.raises(ConfigError):  # still only http and https
        load_settings(notify={"sinks": [{**spec, "url": "ftp://alertmanager.monitoring/"}]})
    settings = load_settings(notify={"webhook_urls": [url], "webhook_allow_insecure": True})
    from newswatch.alerts.notify import configured_sinks

    [sink] = configured_sinks(settings.notify)
    assert sink.settings.allow_insecure


async def test_a_url_file_with_a_bad_url_fails_when_the_sink_is_built(tmp_path: Path) -> None:
    """A URL read from a file is checked at start, not retried max_attempts times as if transient."""
    (tmp_path / "url").write_text(f"ftp://files.example.com/{CANARY}\n")
    spec = SinkSettings(name="chat", type="slack", url_file=tmp_path / "url")
    with pytest.raises(SinkConfigError) as err:
        build_sink(spec)
    assert "the scheme is 'ftp'" in str(err.value) and CANARY not in str(err.value)


async def test_an_unusable_url_is_not_retried(receiver: Receiver) -> None:
    """Defence in depth: a URL aiohttp cannot use fails once, not 14 times."""
    sink = build_sink(SinkSettings(name="hook", type="webhook", url=receiver.url))
    sink._url = "ftp://files.example.com/x"  # as if a check were bypassed
    async with sink:
        outcome = await deliver(
            sink,
            Notification(alerts=(make_alert(),), group="entity"),
            NotifySettings(max_attempts=14, backoff_initial_ms=1, backoff_max_ms=2),
        )
    assert not outcome.ok and outcome.attempts == 1 and "invalid url" in outcome.error


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("NEWSWATCH_NOTIFY_WEBHOOK_URLS", f"https://hooks.example.com/{CANARY}", "is not valid JSON"),
        (
            "NEWSWATCH_NOTIFY_SINKS",
            '[{"name": "chat", "type": "slack", "url": "https://x/' + CANARY,
            "is not valid JSON",
        ),
        (
            "NEWSWATCH_NOTIFY_SINKS",
            json.dumps([{"name": "chat", "type": "slack", "url": f"ftp://x/{CANARY}"}]),
            "notify.sinks.0: url of sink 'chat': the scheme is 'ftp'",
        ),
        (
            "NEWSWATCH_NOTIFY_WEBHOOK_URLS",
            json.dumps([f"http://hooks.example.com/{CANARY}"]),
            "webhook_urls[0] (NEWSWATCH_NOTIFY_WEBHOOK_URLS)",
        ),
    ],
    ids=["plain-url", "bad-json", "ftp-sink", "http-webhook"],
)
def test_a_bad_sink_variable_is_one_line_and_exit_2(name: str, value: str, expected: str) -> None:
    proc = _cli("alerts", "test", "--sink", "chat", env={name: value})
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert expected in err and CANARY not in err
    if "JSON" in expected:
        assert name in err
