"""The classify worker end to end: real broker, real ONNX model, real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from newswatch.io.http import StageServer
from newswatch.io.kafka import create_topics
from newswatch.io.schemas import DeadLetter, ScoredPost
from newswatch.metrics import Metrics
from newswatch.models.engine import ClassifierEngine
from newswatch.settings import load_settings
from newswatch.stream.classify import ClassifyWorker
from tests.support.kafka import (
    TICKERS,
    AckedPublisher,
    produce_now,
    read_topic,
    scored_ids,
    valid_posts,
    value,
)
from tests.support.poll import wait_until
from tests.support.settings import settings_for, stage_env


def _post(**fields: object) -> bytes:
    base: dict[str, object] = {
        "id": "m",
        "text": "$AAPL up",
        "source": "wire",
        "published_at": "2026-01-01T00:00:00Z",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


# 20 malformed messages and the reason each must be dead-lettered with.
MALFORMED: list[tuple[bytes, str]] = [
    (b"\xff\xfe\x00 not utf-8", "invalid_utf8"),
    (b'{"id": "u", "text": "\xc3\x28"}', "invalid_utf8"),
    (b"not json at all", "invalid_json"),
    (b'{"id": "x", "text": ', "invalid_json"),
    (b"", "invalid_json"),
    (b"[1, 2, 3]", "not_object"),
    (b"null", "not_object"),
    (_post(id="m1", text=None), "missing_field"),
    (_post(id="m2", source=None), "missing_field"),
    (_post(id="m3", published_at=None), "missing_field"),
    (_post(id="m4", text=42), "wrong_type"),
    (_post(id="m5", entities="$AAPL"), "wrong_type"),
    (_post(id="m6", published_at=1700000000), "wrong_type"),
    (_post(id=""), "bad_id"),
    (_post(id="m7", text="   "), "empty_text"),
    (_post(id="m8", text="\u202e\u200b\x00"), "empty_text"),
    (_post(id="m9", published_at="not a date"), "bad_timestamp"),
    (_post(id="m10", published_at="2999-01-01T00:00:00Z"), "future_timestamp"),
    (_post(id="m11", text="x" * 5_000), "too_large"),
    (b"{" + b" " * 6_000 + b"}", "too_large"),
]


async def test_end_to_end_scores_valid_and_dead_letters_malformed(
    bootstrap: str, unique: str, metrics: Metrics, engine: ClassifierEngine
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=32, batch_max_wait_ms=100, max_message_bytes=4_096)
    await create_topics(settings.kafka, settings.topics.all())
    valid = valid_posts(200)
    items: list[tuple[bytes | None, bytes]] = [(k.encode(), v) for k, v in valid]
    for i, (raw, _reason) in enumerate(MALFORMED):  # spread the bad ones through the stream
        items.insert(i * 10 + 3, (None, raw))
    await produce_now(settings.kafka, settings.topics.posts, items)

    worker = ClassifyWorker(settings, metrics, engine=engine)
    async with StageServer(metrics.registry, ready=lambda: worker.ready) as server, worker:
        await worker.wait_joined(20)
        assert worker.ready
        await wait_until(
            lambda: (
                value(metrics, "newswatch_stream_messages_consumed_total", stage="classify") >= 220
                and value(metrics, "newswatch_stream_messages_produced_total", stage="classify") >= 200
            ),
            120,
            "220 consumed and 200 scored",
        )
        await wait_until(
            lambda: (
                [
                    value(
                        metrics,
                        "newswatch_stream_consumer_lag_messages",
                        stage="classify",
                        topic=settings.topics.posts,
                        partition=str(p),
                    )
                    for p in (0, 1)
                ]
                == [0.0, 0.0]
                and metrics.registry.get_sample_value(
                    "newswatch_stream_consumer_lag_messages",
                    {"stage": "classify", "topic": settings.topics.posts, "partition": "1"},
                )
                is not None
            ),
            10,
            "lag to read 0 on both partitions",
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/metrics") as resp:
                body = await resp.text()
            async with http.get(f"{server.url}/readyz") as resp:
                assert resp.status == 200

    # every valid post id is scored, with its event time as the record timestamp
    scored = await read_topic(bootstrap, settings.topics.scored, lambda rs: len(rs) >= 200)
    by_id = {
        ScoredPost.from_json(r.value).post.id: (r, ScoredPost.from_json(r.value)) for r in scored if r.value
    }
    assert set(by_id) == {k for k, _ in valid}
    for post_id, (rec, event) in by_id.items():
        assert rec.key == post_id.encode()
        assert rec.timestamp == int(event.post.published_at.timestamp() * 1000)
        assert event.topic in engine.topics
        assert event.sentiment in ("bearish", "bullish", "neutral")
        assert -1.0 <= event.score <= 1.0
        assert event.model_version == engine.model_version
        assert event.post.entities and event.post.entities[0] in TICKERS
        assert event.scored_ms >= event.record_ms

    # every malformed message is dead-lettered with its reason and exact bytes
    dlq = await read_topic(bootstrap, settings.topics.dead_letter, lambda rs: len(rs) >= 20)
    letters = [DeadLetter.from_json(r.value) for r in dlq if r.value is not None]
    assert sorted((d.raw, d.reason) for d in letters) == sorted(MALFORMED)
    for d in letters:
        assert d.stage == "classify" and d.topic == settings.topics.posts and d.detail

    # metrics agree, in the registry and over HTTP
    assert value(metrics, "newswatch_stream_messages_consumed_total", stage="classify") == 220
    assert value(metrics, "newswatch_stream_messages_produced_total", stage="classify") == 200
    expected: dict[str, int] = {}
    for _raw, reason in MALFORMED:
        expected[reason] = expected.get(reason, 0) + 1
    for reason, count in expected.items():
        assert (
            value(metrics, "newswatch_stream_dead_lettered_total", stage="classify", reason=reason) == count
        )
    assert value(metrics, "newswatch_stream_e2e_latency_seconds_count") == 200
    assert value(metrics, "newswatch_stream_batch_size_sum", stage="classify") == 200
    assert value(metrics, "newswatch_models_inference_seconds_count", backend=engine.backend) >= 7
    assert 'newswatch_stream_messages_consumed_total{stage="classify"} 220.0' in body
    assert 'newswatch_stream_dead_lettered_total{reason="too_large",stage="classify"} 2.0' in body
    assert "newswatch_stream_consumer_lag_messages" in body


async def test_graceful_restart_loses_nothing_and_repeats_nothing(
    bootstrap: str, unique: str, engine: ClassifierEngine
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=8, batch_max_wait_ms=50)
    await create_topics(settings.kafka, settings.topics.all())
    first = valid_posts(100, "a")
    await produce_now(settings.kafka, settings.topics.posts, [(k.encode(), v) for k, v in first])
    trickle = AckedPublisher(settings, "t", strict=True)
    trickle.start()
    try:
        m1 = Metrics()
        async with ClassifyWorker(settings, m1, engine=engine):
            await wait_until(
                lambda: value(m1, "newswatch_stream_messages_produced_total", stage="classify") >= 40,
                60,
                "40 scored",
            )
        # the stream flows on while no worker runs
        await wait_until(lambda: len(trickle.acked) >= 20, 30, "posts published while no worker runs")
    finally:
        await trickle.stop()
    expected = [k for k, _ in first] + trickle.acked
    m2 = Metrics()
    async with ClassifyWorker(settings, m2, engine=engine):
        scored = await read_topic(
            bootstrap, settings.topics.scored, lambda rs: set(expected) <= set(scored_ids(rs)), timeout_s=90
        )
    ids = scored_ids(scored)
    assert set(ids) == set(expected)
    assert len(ids) == len(expected), "a graceful stop commits what it scored: nothing is scored twice"
    assert value(m1, "newswatch_stream_messages_produced_total", stage="classify") + value(
        m2, "newswatch_stream_messages_produced_total", stage="classify"
    ) == len(expected)


@pytest.mark.fault
@pytest.mark.slow
async def test_sigkill_mid_stream_loses_nothing(
    bootstrap: str, unique: str, engine: ClassifierEngine, tmp_path: Path
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=4, batch_max_wait_ms=20, max_in_flight_batches=3)
    await create_topics(settings.kafka, settings.topics.all())
    first = valid_posts(200, "k")
    await produce_now(settings.kafka, settings.topics.posts, [(k.encode(), v) for k, v in first])
    env = stage_env(settings)
    trickle = AckedPublisher(settings, "t", strict=True)
    log = (tmp_path / "classify.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "newswatch.cli.main", "classify", "--metrics-port", "0"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    trickle.start()
    try:
        seen = await read_topic(bootstrap, settings.topics.scored, lambda rs: len(rs) >= 40, timeout_s=90)
        assert len(seen) >= 40, (tmp_path / "classify.log").read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        metrics = Metrics()
        async with ClassifyWorker(settings, metrics, engine=engine):
            await wait_until(
                lambda: bool(
                    metrics.registry.get_sample_value(
                        "newswatch_stream_messages_produced_total", {"stage": "classify"}
                    )
                ),
                60,
                "the new worker to score",
            )
            await trickle.stop()
            published = {k for k, _ in first} | set(trickle.acked)
            scored = await read_topic(
                bootstrap, settings.topics.scored, lambda rs: published <= set(scored_ids(rs)), timeout_s=120
            )
    finally:
        await trickle.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    lost = published - set(scored_ids(scored))
    assert not lost, f"lost {len(lost)} of {len(published)}: {sorted(lost)[:10]}"


async def test_two_workers_share_the_stream_and_rebalance_without_loss(
    bootstrap: str, unique: str, engine: ClassifierEngine
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=8, batch_max_wait_ms=50)
    await create_topics(settings.kafka, settings.topics.all())
    posts = valid_posts(300, "r")
    m1, m2 = Metrics(), Metrics()
    async with ClassifyWorker(settings, m1, engine=engine) as first:
        await first.wait_joined(20)
        await produce_now(settings.kafka, settings.topics.posts, [(k.encode(), v) for k, v in posts[:150]])
        await wait_until(
            lambda: value(m1, "newswatch_stream_messages_produced_total", stage="classify") >= 20,
            60,
            "20 scored",
        )
        async with ClassifyWorker(settings, m2, engine=engine) as second:  # joins mid-stream: a rebalance
            await second.wait_joined(30)
            await produce_now(
                settings.kafka, settings.topics.posts, [(k.encode(), v) for k, v in posts[150:]]
            )
            scored = await read_topic(
                bootstrap,
                settings.topics.scored,
                lambda rs: {k for k, _ in posts} <= set(scored_ids(rs)),
                timeout_s=90,
            )
            second_share = value(m2, "newswatch_stream_messages_produced_total", stage="classify")
    assert {k for k, _ in posts} <= set(scored_ids(scored))
    assert second_share > 0, "the second worker took over a partition"


async def test_engine_failure_dead_letters_posts_and_keeps_going(
    bootstrap: str, unique: str, metrics: Metrics
) -> None:
    """A broken engine (here: a real one that was closed) must not stop the stream or lose posts."""
    settings = settings_for(bootstrap, unique, batch_size=8, batch_max_wait_ms=50)
    await create_topics(settings.kafka, settings.topics.all())
    broken = ClassifierEngine.load(load_settings().models)
    broken.close()
    posts = valid_posts(5, "e")
    await produce_now(settings.kafka, settings.topics.posts, [(k.encode(), v) for k, v in posts])
    async with ClassifyWorker(settings, metrics, engine=broken) as worker:
        await wait_until(
            lambda: (
                value(metrics, "newswatch_stream_dead_lettered_total", stage="classify", reason="model_error")
                >= 5
            ),
            60,
            "5 model errors",
        )
        assert worker.alive
    dlq = await read_topic(bootstrap, settings.topics.dead_letter, lambda rs: len(rs) >= 5)
    letters = [DeadLetter.from_json(r.value) for r in dlq if r.value is not None]
    assert sorted(d.raw for d in letters) == sorted(v for _, v in posts)
    assert all(d.reason == "model_error" and "closed" in d.detail for d in letters)
    assert value(metrics, "newswatch_stream_messages_produced_total", stage="classify") == 0


async def test_unreachable_kafka_is_a_clear_error(
    unique: str, engine: ClassifierEngine, metrics: Metrics
) -> None:
    from newswatch.demo.broker import free_port
    from newswatch.io.kafka import KafkaIOError

    settings = settings_for(f"127.0.0.1:{free_port()}", unique)
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"request_timeout_ms": 1_000})}
    )
    worker = ClassifyWorker(settings, metrics, engine=engine)
    with pytest.raises(KafkaIOError, match="classify cannot start"):
        await worker.start()
    await worker.stop()  # a no-op: nothing was left open


async def test_batches_close_by_size_and_by_max_wait(
    bootstrap: str, unique: str, engine: ClassifierEngine, metrics: Metrics
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=8, batch_max_wait_ms=300)
    await create_topics(settings.kafka, settings.topics.all(), partitions=1)
    posts = valid_posts(21, "b")
    await produce_now(settings.kafka, settings.topics.posts, [(k.encode(), v) for k, v in posts])
    async with ClassifyWorker(settings, metrics, engine=engine):
        await wait_until(
            lambda: value(metrics, "newswatch_stream_messages_produced_total", stage="classify") >= 21,
            60,
            "21",
        )
    count = value(metrics, "newswatch_stream_batch_size_count", stage="classify")
    assert value(metrics, "newswatch_stream_batch_size_sum", stage="classify") == 21
    # never more than batch_size; the 5 left over close by time, not by size
    assert value(metrics, "newswatch_stream_batch_size_bucket", stage="classify", le="8.0") == count
    assert count >= 3
