"""Issue 18 point 6: replay says how many posts the aggregator will count late (at least)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from newswatch.cli.main import main
from newswatch.demo.replay import closed_until
from newswatch.demo.stack import LocalStack
from newswatch.demo.stages import counter
from newswatch.models.artifacts import default_data_dir
from newswatch.settings import load_settings
from tests.support.poll import wait_until_sync

STOCKNET = default_data_dir() / "stocknet_tweets" / "stocknet_tweets_2014_2016.csv"
N = 300


def _replay(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["replay", str(STOCKNET), "--limit", str(N), "--speed", "0", "--quiet"]) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return out


@pytest.mark.slow
def test_replay_forecasts_the_aggregators_late_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("NEWSWATCH_")]:
        monkeypatch.delenv(name)
    with LocalStack(load_settings(), tmp_path, stages=("classify", "aggregate")) as stack:
        monkeypatch.setenv("NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap_servers)
        monkeypatch.setenv("NEWSWATCH_KAFKA_BROKER_COMPAT", "tansu")
        aggregate = next(p for p in stack.running if p.name == "aggregate")

        def consumed() -> float:
            return aggregate.metric("newswatch_stream_messages_consumed_total")

        first = _replay(capsys)  # history into a fresh aggregator: sorted, nothing late
        assert first["sent"] == N and first["late_at_aggregator"] == 0
        wait_until_sync(lambda: consumed() >= N, 180, "the aggregator to take the first replay")
        assert aggregate.metric("newswatch_stream_late_events_total") == 0
        settings = load_settings()
        wait_until_sync(  # the windows the first replay closed are on the windows topic
            lambda: asyncio.run(closed_until(settings.kafka, settings.topics.windows)) is not None,
            60,
            "final windows of the first replay",
        )

        again = _replay(capsys)  # the same history again: older than the windows it closed
        forecast = again["late_at_aggregator"]
        assert isinstance(forecast, int) and forecast > 0
        wait_until_sync(lambda: consumed() >= 2 * N, 180, "the aggregator to take the second replay")
        late = counter(aggregate.port, "newswatch_stream_late_events_total", "aggregate")
        duplicates = counter(aggregate.port, "newswatch_stream_duplicates_total", "aggregate")
        # the forecast knows the aggregator's watermark only from the windows it closed: a bound
        assert forecast <= late, (late, duplicates, forecast)
        assert late + duplicates == N  # the rest were re-deliveries of posts within the horizon
