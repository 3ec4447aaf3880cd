"""The detection stage on the real broker, end to end into the notifier; and ``newswatch detect``."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.notify import Notifier
from newswatch.alerts.stage import DetectStage
from newswatch.cli.main import main
from newswatch.io.schemas import DeadLetter, WindowStat
from newswatch.metrics import Metrics
from newswatch.settings import KafkaSettings, Settings, TopicSettings
from newswatch.settings.alerts import AlertSettings
from tests.support.alerts import entity_window as window
from tests.support.kafka import read_topic
from tests.support.receivers import Receiver
from tests.support.settings import notify_settings


async def _records(kafka: KafkaSettings, topic: str, n: int, timeout_s: float = 20) -> list[bytes]:
    records = await read_topic(kafka.bootstrap_servers, topic, lambda rs: len(rs) >= n, timeout_s)
    return [r.value or b"" for r in records]


async def test_windows_to_alerts_to_webhook(
    kafka: KafkaSettings, topics: TopicSettings, receiver: Receiver, unique: str
) -> None:
    """Final windows → detection → alerts topic → notifier → a real webhook; bad records dead-lettered."""
    rng = random.Random(1)
    settings = AlertSettings(signals=("volume",), group_id=f"detect-{unique}")
    metrics = Metrics()
    stats = [window(i, 40 + rng.randint(-4, 4)) for i in range(30)] + [window(30, 200), window(31, 210)]
    async with DetectStage(Settings(kafka=kafka, topics=topics, alerts=settings), metrics) as stage:
        producer = AIOKafkaProducer(**kafka.client_kwargs())
        await producer.start()
        try:
            for s in stats[:15]:
                await producer.send_and_wait(
                    topics.windows, s.to_json(), key=f"entity:{s.key}:{s.window}".encode()
                )
            await producer.send_and_wait(topics.windows, b'{"kind": "entity"}', key=b"bad")
            for s in stats[15:]:
                await producer.send_and_wait(
                    topics.windows, s.to_json(), key=f"entity:{s.key}:{s.window}".encode()
                )
        finally:
            await producer.stop()
        produced = 0
        deadline = time.monotonic() + 30
        while produced < 1:
            assert time.monotonic() < deadline, "no alert produced"
            produced += await stage.step(timeout_ms=200)
    [raw] = await _records(kafka, topics.alerts, 1)
    alert = AlertEvent.from_json(raw)
    assert alert.status == "firing" and alert.key == "$NVDA" and alert.observed == pytest.approx(200, abs=1)
    [dead] = [DeadLetter.from_json(r) for r in await _records(kafka, topics.dead_letter, 1)]
    assert dead.stage == "detect" and dead.reason == "invalid_window" and dead.raw == b'{"kind": "entity"}'
    assert metrics.registry.get_sample_value("newswatch_alerts_fired_total", {"severity": "critical"}) == 1

    async with Notifier(
        Settings(kafka=kafka, topics=topics, notify=notify_settings(receiver.url, unique))
    ) as notifier:
        deadline = time.monotonic() + 30
        while not receiver.accepted:
            assert time.monotonic() < deadline, "alert not delivered"
            await notifier.step(timeout_ms=200)
    [payload] = [r.json() for r in receiver.accepted]
    assert payload["alerts"][0]["idempotency_key"] == alert.idempotency_key


def _series_csv(path: Path) -> None:
    rng = random.Random(2)
    lines = ["timestamp,value"]
    t = 1_704_067_200
    for i in range(300):
        t += rng.choice([45, 60, 75, 240])  # irregular spacing
        value = 1000 + rng.gauss(0, 30) + (600 if 200 <= i < 205 else 0)
        lines.append(f"{t},{value:.1f}")
    path.write_text("\n".join(lines) + "\n")


def test_detect_cli_prints_the_documented_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    series = tmp_path / "s.csv"
    _series_csv(series)
    assert main(["detect", "--series", str(series), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["detector"] == "likelihood"  # the default (docs/alerts.md)
    assert len(out["scores"]) == 300
    row = out["scores"][0]
    assert set(row) == {"timestamp", "value", "anomaly_score", "alert"}
    assert all(0.0 <= r["anomaly_score"] <= 1.0 for r in out["scores"])
    flagged = [i for i, r in enumerate(out["scores"]) if r["alert"]]
    assert flagged and min(flagged) in range(200, 203), "the injected surge alerts, early"
    [episode] = out["alerts"]
    assert set(episode) == {"start", "end", "peak_score"} and episode["peak_score"] > 0.8
    for name in ("robust_zscore", "cusum", "three_sigma", "fixed_threshold"):
        assert main(["detect", "--series", str(series), "--detector", name, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["detector"] == name


def test_detect_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n2024-01-01T00:00:00Z,1\nyesterday,2\n")
    assert main(["detect", "--series", str(bad), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.csv:3" in err and "timestamp" in err
    assert main(["detect", "--series", str(tmp_path / "missing.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    good = tmp_path / "g.csv"
    good.write_text("1704067200,1\n1704067260,2\n")
    assert main(["detect", "--series", str(good), "--detector", "nope"]) == 2
    assert "unknown detector 'nope'" in capsys.readouterr().err


async def test_restarted_stage_replays_and_still_resolves(
    kafka: KafkaSettings, topics: TopicSettings, unique: str
) -> None:
    """A stage restarted while an alert is firing restores it from the windows topic, then resolves it."""
    rng = random.Random(3)
    settings = AlertSettings(signals=("volume",), group_id=f"detect-{unique}")
    history = [window(i, 40 + rng.randint(-4, 4)) for i in range(30)] + [window(30, 200), window(31, 210)]

    async def send(stats: list[WindowStat]) -> None:
        producer = AIOKafkaProducer(**kafka.client_kwargs())
        await producer.start()
        try:
            for s in stats:
                await producer.send_and_wait(topics.windows, s.to_json(), key=b"entity:$NVDA:tumbling_60000")
        finally:
            await producer.stop()

    async def run_until(stage: DetectStage, n: int) -> int:
        produced, deadline = 0, time.monotonic() + 30
        while produced < n:
            assert time.monotonic() < deadline, "no alert produced"
            produced += await stage.step(timeout_ms=200)
        return produced

    async with DetectStage(Settings(kafka=kafka, topics=topics, alerts=settings)) as first:
        await send(history)
        await run_until(first, 1)
        for _ in range(3):  # let the rest of the batch be committed
            await first.step(timeout_ms=100)
    async with DetectStage(Settings(kafka=kafka, topics=topics, alerts=settings)) as second:
        assert second.engine.is_firing("entity", "$NVDA", "tumbling_60000", "volume"), (
            "state restored by replay"
        )
        await send([window(32 + i, 40) for i in range(3)])
        await run_until(second, 1)
    fired, resolved = (AlertEvent.from_json(r) for r in await _records(kafka, topics.alerts, 2))
    assert (fired.status, resolved.status) == ("firing", "resolved")
    assert resolved.fingerprint == fired.fingerprint and resolved.episode_start_ms == fired.episode_start_ms
