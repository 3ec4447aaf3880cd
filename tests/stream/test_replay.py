"""Replay of CSV and JSONL files onto the real broker."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newswatch.cli.main import main
from newswatch.demo.replay import ReplayError, load_records, schedule
from newswatch.io.kafka import create_topics
from tests.support.kafka import read_topic
from tests.support.settings import kafka_settings

STOCKNET_COLUMNS = ["tweet_id", "created_at", "ticker", "file_date", "text", "cashtags", "is_retweet", "lang"]


def _stocknet_csv(path: Path) -> None:
    rows = [
        ["3", "2014-01-01T00:02:00Z", "AAPL", "2014-01-01", "third $AAPL", "AAPL", "0", "en"],
        ["1", "2014-01-01T00:00:00Z", "AAPL", "2014-01-01", "first $AAPL $GOOG", "AAPL GOOG", "0", "en"],
        ["1", "2014-01-01T00:00:00Z", "GOOG", "2014-01-01", "first $AAPL $GOOG", "AAPL GOOG", "0", "en"],
        ["2", "2014-01-01T00:01:00Z", "FB", "2014-01-01", 'second\rline, with "quotes"', "fb", "1", "es"],
        ["4", "2014-01-01T02:00:00Z", "FB", "2014-01-01", "after a gap", "", "0", "en"],
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL)
        writer.writerow(STOCKNET_COLUMNS)
        writer.writerows(rows)


def test_csv_rows_are_mapped_deduplicated_and_sorted(tmp_path: Path) -> None:
    path = tmp_path / "stocknet.csv"
    _stocknet_csv(path)
    records, duplicates = load_records(path)
    assert duplicates == 1
    objs = [r.obj for r in records]
    assert [o["id"] for o in objs if o] == ["1", "2", "3", "4"]
    first = objs[0]
    assert first == {
        "id": "1",
        "text": "first $AAPL $GOOG",
        "source": "stocknet",
        "published_at": "2014-01-01T00:00:00Z",
        "lang": "en",
        "entities": ["$AAPL", "$GOOG"],
    }
    assert objs[1] is not None and objs[1]["text"] == 'second\rline, with "quotes"'
    assert objs[1]["entities"] == ["$FB"]
    assert objs[3] is not None and "entities" not in objs[3]  # extracted downstream
    assert [r.key for r in records] == [b"1", b"2", b"3", b"4"]


def test_schedule_follows_event_time() -> None:
    ms = [0, 30_000, 60_000, 60_000, 3_660_000]
    assert schedule(ms, speed=60) == [0.0, 0.5, 1.0, 1.0, 61.0]
    assert schedule(ms, speed=1) == [0.0, 30.0, 60.0, 60.0, 3660.0]
    assert schedule(ms, speed=60, max_gap_s=5) == [0.0, 0.5, 1.0, 1.0, 6.0]
    assert schedule(ms, speed=0) == [0.0] * 5
    assert schedule([None, 0, None, 1_000], speed=1) == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ReplayError):
        schedule(ms, speed=-1)


def test_schedule_of_a_loaded_file(tmp_path: Path) -> None:
    path = tmp_path / "stocknet.csv"
    _stocknet_csv(path)
    records, _ = load_records(path)
    assert schedule([r.event_ms for r in records], speed=60) == [0.0, 1.0, 2.0, 120.0]


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(ReplayError, match="unknown format"):
        load_records(tmp_path / "x.parquet")
    with pytest.raises(ReplayError, match="no such file"):
        load_records(tmp_path / "nope.csv")


def test_cli_replay_publishes_every_row(
    tmp_path: Path, bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSWATCH_KAFKA_BROKER_COMPAT", "tansu")  # as `newswatch broker` says
    topic = f"replay-{unique}"
    asyncio.run(create_topics(kafka_settings(bootstrap), [topic]))
    path = tmp_path / "posts.jsonl"
    lines = [
        json.dumps(
            {
                "id": f"j{i}",
                "text": f"post {i} $TSLA",
                "source": "wire",
                "published_at": f"2026-01-01T00:00:{i:02d}Z",
            }
        )
        for i in range(30)
    ]
    lines.insert(5, "this line is not json")
    lines.insert(9, "[1, 2]")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before_ms = int(time.time() * 1000)
    code = main(["replay", str(path), "--bootstrap-servers", bootstrap, "--topic", topic, "--quiet"])
    assert code == 0
    records = asyncio.run(read_topic(bootstrap, topic, lambda rs: len(rs) >= 32))
    assert len(records) == 32
    values = sorted(r.value for r in records if r.value is not None)
    assert b"this line is not json" in values and b"[1, 2]" in values
    keyed = {r.key: json.loads(r.value) for r in records if r.key is not None and r.value is not None}
    assert set(keyed) == {f"j{i}".encode() for i in range(30)}
    assert keyed[b"j7"]["published_at"] == "2026-01-01T00:00:07Z"  # event time kept
    # the Kafka timestamp is the publish time, not the event time
    assert all(before_ms - 1_000 <= r.timestamp <= int(time.time() * 1000) + 1_000 for r in records)


def test_cli_replay_retime_and_limit(
    tmp_path: Path, bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSWATCH_KAFKA_BROKER_COMPAT", "tansu")  # as `newswatch broker` says
    topic = f"replay-{unique}"
    asyncio.run(create_topics(kafka_settings(bootstrap), [topic]))
    path = tmp_path / "stocknet.csv"
    _stocknet_csv(path)
    code = main(
        [
            "replay",
            str(path),
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topic,
            "--quiet",
            "--retime",
            "--limit",
            "3",
        ]
    )
    assert code == 0
    records = asyncio.run(read_topic(bootstrap, topic, lambda rs: len(rs) >= 3, timeout_s=10))
    assert len(records) == 3
    now = datetime.now(UTC)
    for r in records:
        assert r.value is not None
        published = datetime.fromisoformat(json.loads(r.value)["published_at"])
        assert abs((now - published).total_seconds()) < 60


def test_cli_replay_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", str(tmp_path / "missing.csv"), "--bootstrap-servers", "127.0.0.1:1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err
