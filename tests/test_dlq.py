"""``newswatch dlq inspect`` and ``dlq replay`` against the real embedded broker."""

from __future__ import annotations

import asyncio
import json

import pytest

from newswatch.cli.main import main
from newswatch.io.kafka import create_topics
from newswatch.io.schemas import DeadLetter
from newswatch.settings import KafkaSettings
from tests.support.kafka import read_topic, send_posts


def _letters(posts: str) -> list[DeadLetter]:
    bad_json = [
        DeadLetter("classify", "invalid_json", "not JSON", posts, 0, i, b'{"id": "j%d", ' % i, 1_000 + i)
        for i in range(4)
    ]
    empty = [
        DeadLetter("classify", "empty_text", "empty", posts, 0, 10 + i, b'{"id":"e%d"}' % i, 2_000)
        for i in range(2)
    ]
    return bad_json + empty


def test_inspect_counts_by_reason_and_replay_republishes_each_once(
    kafka: KafkaSettings, unique: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSWATCH_KAFKA_BROKER_COMPAT", "tansu")  # as `newswatch broker` says to
    dlq, posts = f"dlq-{unique}", f"posts-{unique}"
    asyncio.run(create_topics(kafka, [dlq, posts], partitions=1))
    letters = _letters(posts)
    send_posts(kafka, dlq, [(b"k", dl.to_json()) for dl in letters] + [(b"k", b"\xff not a dead letter")])
    flags = ["--bootstrap-servers", kafka.bootstrap_servers, "--topic", dlq]

    assert main(["dlq", "inspect", "--json", "--samples", "2", *flags]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["total"] == 7 and report["unreadable"] == 1
    counts = {(g["stage"], g["reason"]): g["count"] for g in report["by_reason"]}
    assert counts == {("classify", "invalid_json"): 4, ("classify", "empty_text"): 2}
    first = report["by_reason"][0]
    assert len(first["samples"]) == 2 and first["samples"][0]["raw"].startswith('{"id": "j')

    assert main(["dlq", "replay", "--reason", "invalid_json", *flags]) == 0
    outcome = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert outcome == {
        "published": 4,
        "already_replayed": 0,
        "filtered": 2,
        "unreadable": 1,
        "by_topic": {posts: 4},
    }
    records = asyncio.run(read_topic(kafka.bootstrap_servers, posts, lambda rs: len(rs) >= 4))
    assert sorted(r.value for r in records) == sorted(dl.raw for dl in letters[:4])  # the exact bytes

    # a second replay of everything: the four already replayed are skipped, the two others go
    assert main(["dlq", "replay", *flags]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["published"], again["already_replayed"], again["filtered"]) == (2, 4, 0)
    records = asyncio.run(read_topic(kafka.bootstrap_servers, posts, lambda rs: len(rs) >= 6))
    assert len(records) == 6


def test_inspect_an_unreachable_broker_is_one_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dlq", "inspect", "--bootstrap-servers", "127.0.0.1:1", "--topic", "nothing"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.startswith("newswatch dlq: error:"), err
