"""The classify worker end to end: real broker, real ONNX model, real HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiokafka.structs import ConsumerRecord

from newswatch.io.http import StageServer
from newswatch.io.kafka import create_topics, make_producer, publish
from newswatch.io.schemas import DeadLetter, ScoredPost
from newswatch.metrics import Metrics
from newswatch.models.engine import ClassifierEngine
from newswatch.settings import Settings, load_settings
from newswatch.stream.classify import ClassifyWorker
from tests.stream.kafkautil import read_topic, settings_for, stage_env

TICKERS = ["$AAPL", "$TSLA", "$NVDA", "$AMZN", "$JPM", "$XOM"]
PHRASES = [
    "{t} beats earnings estimates, shares jump 8% after hours",
    "{t} cut to underperform at Morgan Stanley; price target lowered",
    "{t} announces $5B buyback and raises dividend",
    "Fed holds rates steady; {t} slips in early trading",
    "{t} faces SEC probe over accounting practices",
    "{t} CEO to step down at year end",
]


@pytest.fixture(scope="session")
def engine() -> Iterator[ClassifierEngine]:
    """The configured model (default: the shipped int8 ONNX model), loaded once."""
    eng = ClassifierEngine.load(load_settings().models)
    yield eng
    eng.close()


def _valid(n: int, prefix: str = "p") -> list[tuple[str, bytes]]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        post = {
            "id": f"{prefix}{i}",
            "text": PHRASES[i % len(PHRASES)].format(t=TICKERS[i % len(TICKERS)]),
            "source": ["wire", "social", "blog"][i % 3],
            "published_at": (now - timedelta(seconds=n - i)).isoformat(),
        }
        out.append((post["id"], json.dumps(post).encode()))
    return out


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
    (_post(id="m10", published_at="2999-01-01T00:00:00Z"), "bad_timestamp"),
    (_post(id="m11", text="x" * 5_000), "too_large"),
    (b"{" + b" " * 6_000 + b"}", "too_large"),
]


async def _publish(settings: Settings, items: list[tuple[bytes | None, bytes]]) -> None:
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        now = int(time.time() * 1000)
        await publish(producer, settings.topics.posts, [(k, v, now) for k, v in items])
    finally:
        await producer.stop()


async def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _ids(records: list[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return [ScoredPost.from_json(r.value).post.id for r in records if r.value is not None]


async def test_end_to_end_scores_valid_and_dead_letters_malformed(
    bootstrap: str, unique: str, metrics: Metrics, engine: ClassifierEngine
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=32, batch_max_wait_ms=100, max_message_bytes=4_096)
    await create_topics(settings.kafka, settings.topics.all())
    valid = _valid(200)
    items: list[tuple[bytes | None, bytes]] = [(k.encode(), v) for k, v in valid]
    for i, (raw, _reason) in enumerate(MALFORMED):  # spread the bad ones through the stream
        items.insert(i * 10 + 3, (None, raw))
    await _publish(settings, items)

    worker = ClassifyWorker(settings, engine, metrics)
    async with StageServer(metrics.registry, ready=lambda: worker.ready) as server, worker:
        await worker.wait_joined(20)
        assert worker.ready
        await _until(
            lambda: (
                _value(metrics, "newswatch_stream_messages_consumed_total", stage="classify") >= 220
                and _value(metrics, "newswatch_stream_messages_produced_total", stage="classify") >= 200
            ),
            120,
            "220 consumed and 200 scored",
        )
        await _until(
            lambda: (
                [
                    _value(
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
    assert _value(metrics, "newswatch_stream_messages_consumed_total", stage="classify") == 220
    assert _value(metrics, "newswatch_stream_messages_produced_total", stage="classify") == 200
    expected: dict[str, int] = {}
    for _raw, reason in MALFORMED:
        expected[reason] = expected.get(reason, 0) + 1
    for reason, count in expected.items():
        assert (
            _value(metrics, "newswatch_stream_dead_lettered_total", stage="classify", reason=reason) == count
        )
    assert _value(metrics, "newswatch_stream_e2e_latency_seconds_count") == 200
    assert _value(metrics, "newswatch_stream_batch_size_sum", stage="classify") == 200
    assert _value(metrics, "newswatch_models_inference_seconds_count", backend=engine.backend) >= 7
    assert 'newswatch_stream_messages_consumed_total{stage="classify"} 220.0' in body
    assert 'newswatch_stream_dead_lettered_total{reason="too_large",stage="classify"} 2.0' in body
    assert "newswatch_stream_consumer_lag_messages" in body


class _Trickle:
    """Keeps publishing valid posts (2 every 0.1 s) until stopped: a stream that flows on."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        self.settings = settings
        self.prefix = prefix
        self.published: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        producer = make_producer(self.settings.kafka)
        await producer.start()
        try:
            n = 0
            while not self._stop.is_set():
                batch = _valid(2, f"{self.prefix}{n}-")
                now = int(time.time() * 1000)
                await publish(producer, self.settings.topics.posts, [(k.encode(), v, now) for k, v in batch])
                self.published += [k for k, _ in batch]
                n += 1
                await asyncio.sleep(0.1)
        finally:
            await producer.stop()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def test_graceful_restart_loses_nothing_and_repeats_nothing(
    bootstrap: str, unique: str, engine: ClassifierEngine
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=8, batch_max_wait_ms=50)
    await create_topics(settings.kafka, settings.topics.all())
    first = _valid(100, "a")
    await _publish(settings, [(k.encode(), v) for k, v in first])
    trickle = _Trickle(settings, "t")
    trickle.start()
    try:
        m1 = Metrics()
        async with ClassifyWorker(settings, engine, m1):
            await _until(
                lambda: _value(m1, "newswatch_stream_messages_produced_total", stage="classify") >= 40,
                60,
                "40 scored",
            )
        # the stream flows on while no worker runs
        await _until(lambda: len(trickle.published) >= 20, 30, "posts published while no worker runs")
    finally:
        await trickle.stop()
    expected = [k for k, _ in first] + trickle.published
    m2 = Metrics()
    async with ClassifyWorker(settings, engine, m2):
        scored = await read_topic(
            bootstrap, settings.topics.scored, lambda rs: set(expected) <= set(_ids(rs)), timeout_s=90
        )
    ids = _ids(scored)
    assert set(ids) == set(expected)
    assert len(ids) == len(expected), "a graceful stop commits what it scored: nothing is scored twice"
    assert _value(m1, "newswatch_stream_messages_produced_total", stage="classify") + _value(
        m2, "newswatch_stream_messages_produced_total", stage="classify"
    ) == len(expected)


@pytest.mark.fault
@pytest.mark.slow
async def test_sigkill_mid_stream_loses_nothing(
    bootstrap: str, unique: str, engine: ClassifierEngine, tmp_path: Path
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=4, batch_max_wait_ms=20, max_in_flight_batches=3)
    await create_topics(settings.kafka, settings.topics.all())
    first = _valid(200, "k")
    await _publish(settings, [(k.encode(), v) for k, v in first])
    env = stage_env(settings)
    trickle = _Trickle(settings, "t")
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
        async with ClassifyWorker(settings, engine, metrics):
            await _until(
                lambda: bool(
                    metrics.registry.get_sample_value(
                        "newswatch_stream_messages_produced_total", {"stage": "classify"}
                    )
                ),
                60,
                "the new worker to score",
            )
            await trickle.stop()
            published = {k for k, _ in first} | set(trickle.published)
            scored = await read_topic(
                bootstrap, settings.topics.scored, lambda rs: published <= set(_ids(rs)), timeout_s=120
            )
    finally:
        await trickle.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    lost = published - set(_ids(scored))
    assert not lost, f"lost {len(lost)} of {len(published)}: {sorted(lost)[:10]}"


async def test_two_workers_share_the_stream_and_rebalance_without_loss(
    bootstrap: str, unique: str, engine: ClassifierEngine
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=8, batch_max_wait_ms=50)
    await create_topics(settings.kafka, settings.topics.all())
    posts = _valid(300, "r")
    m1, m2 = Metrics(), Metrics()
    async with ClassifyWorker(settings, engine, m1) as first:
        await first.wait_joined(20)
        await _publish(settings, [(k.encode(), v) for k, v in posts[:150]])
        await _until(
            lambda: _value(m1, "newswatch_stream_messages_produced_total", stage="classify") >= 20,
            60,
            "20 scored",
        )
        async with ClassifyWorker(settings, engine, m2) as second:  # joins mid-stream: a rebalance
            await second.wait_joined(30)
            await _publish(settings, [(k.encode(), v) for k, v in posts[150:]])
            scored = await read_topic(
                bootstrap,
                settings.topics.scored,
                lambda rs: {k for k, _ in posts} <= set(_ids(rs)),
                timeout_s=90,
            )
            second_share = _value(m2, "newswatch_stream_messages_produced_total", stage="classify")
    assert {k for k, _ in posts} <= set(_ids(scored))
    assert second_share > 0, "the second worker took over a partition"


async def test_engine_failure_dead_letters_posts_and_keeps_going(
    bootstrap: str, unique: str, metrics: Metrics
) -> None:
    """A broken engine (here: a real one that was closed) must not stop the stream or lose posts."""
    settings = settings_for(bootstrap, unique, batch_size=8, batch_max_wait_ms=50)
    await create_topics(settings.kafka, settings.topics.all())
    broken = ClassifierEngine.load(load_settings().models)
    broken.close()
    posts = _valid(5, "e")
    await _publish(settings, [(k.encode(), v) for k, v in posts])
    async with ClassifyWorker(settings, broken, metrics) as worker:
        await _until(
            lambda: (
                _value(
                    metrics, "newswatch_stream_dead_lettered_total", stage="classify", reason="model_error"
                )
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
    assert _value(metrics, "newswatch_stream_messages_produced_total", stage="classify") == 0


async def test_unreachable_kafka_is_a_clear_error(
    unique: str, engine: ClassifierEngine, metrics: Metrics
) -> None:
    from newswatch.demo.broker import free_port
    from newswatch.io.kafka import KafkaIOError

    settings = settings_for(f"127.0.0.1:{free_port()}", unique)
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"request_timeout_ms": 1_000})}
    )
    worker = ClassifyWorker(settings, engine, metrics)
    with pytest.raises(KafkaIOError, match="classify cannot start"):
        await worker.start()
    await worker.stop()  # a no-op: nothing was left open


async def test_batches_close_by_size_and_by_max_wait(
    bootstrap: str, unique: str, engine: ClassifierEngine, metrics: Metrics
) -> None:
    settings = settings_for(bootstrap, unique, batch_size=8, batch_max_wait_ms=300)
    await create_topics(settings.kafka, settings.topics.all(), partitions=1)
    posts = _valid(21, "b")
    await _publish(settings, [(k.encode(), v) for k, v in posts])
    async with ClassifyWorker(settings, engine, metrics):
        await _until(
            lambda: _value(metrics, "newswatch_stream_messages_produced_total", stage="classify") >= 21,
            60,
            "21",
        )
    count = _value(metrics, "newswatch_stream_batch_size_count", stage="classify")
    assert _value(metrics, "newswatch_stream_batch_size_sum", stage="classify") == 21
    # never more than batch_size; the 5 left over close by time, not by size
    assert _value(metrics, "newswatch_stream_batch_size_bucket", stage="classify", le="8.0") == count
    assert count >= 3
