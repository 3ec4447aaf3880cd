"""Property-based fuzzing of the whole classify stage against the real broker and the real model.

One classify worker (real ONNX model) runs for the whole module on the session broker, in a
background event loop. Each hypothesis example publishes a batch of hostile and valid
messages to the posts topic and waits until every message is accounted for: a valid post is
scored (once per message, duplicates of an id included), every other message is dead-lettered
with its exact bytes, its offset and a reason. The worker must stay alive throughout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from newswatch.demo.broker import EmbeddedBroker
from newswatch.io.kafka import create_topics, make_producer
from newswatch.io.schemas import DeadLetter, ScoredPost
from newswatch.metrics import Metrics
from newswatch.models.engine import ClassifierEngine
from newswatch.settings import Settings
from newswatch.stream.classify import ClassifyWorker
from newswatch.stream.decode import REASONS, PostDecoder, Rejection
from tests.support.settings import settings_for

T = TypeVar("T")
TEN_MB = 10 * 1024 * 1024
DEAD_REASONS = {*REASONS, "model_error"}


@dataclass(repr=False)
class Stage:
    """A classify worker and a reader of its output topics, on an event loop in a thread."""

    settings: Settings
    loop: asyncio.AbstractEventLoop
    worker: ClassifyWorker
    producer: AIOKafkaProducer
    scored: list[ScoredPost] = field(default_factory=list)
    dead: dict[tuple[int, int], DeadLetter] = field(default_factory=dict)
    dead_count: int = 0

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def publish(self, raws: list[bytes]) -> list[tuple[int, int]]:
        """Send every message; returns (partition, offset) of each, in order."""
        now = int(time.time() * 1000)
        futures = [
            await self.producer.send(self.settings.topics.posts, raw, key=str(i).encode(), timestamp_ms=now)
            for i, raw in enumerate(raws)
        ]
        metas = await asyncio.gather(*futures)
        return [(m.partition, m.offset) for m in metas]

    async def read(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        try:
            topics = (self.settings.topics.scored, self.settings.topics.dead_letter)
            tps = [TopicPartition(t, p) for t in topics for p in range(self.settings.kafka.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not stop.is_set():
                for tp, records in (await consumer.getmany(timeout_ms=100)).items():
                    for r in records:
                        assert r.value is not None
                        if tp.topic == self.settings.topics.scored:
                            self.scored.append(ScoredPost.from_json(r.value))
                        else:
                            letter = DeadLetter.from_json(r.value)
                            self.dead[(letter.partition, letter.offset)] = letter
                            self.dead_count += 1
        finally:
            await consumer.stop()


@pytest.fixture(scope="module")
def stage(broker: EmbeddedBroker, engine: ClassifierEngine) -> Iterator[Stage]:
    """One classify worker for every example of the module."""
    settings = settings_for(
        broker.bootstrap_servers, f"fuzz-{uuid.uuid4().hex[:8]}", batch_size=16, batch_max_wait_ms=20
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-stage", daemon=True)
    thread.start()
    stop = asyncio.Event()

    async def start() -> tuple[ClassifyWorker, AIOKafkaProducer, asyncio.Task[None]]:
        await create_topics(settings.kafka, settings.topics.all())
        producer = make_producer(settings.kafka, max_request_size=TEN_MB + 1_048_576)
        await producer.start()
        worker = ClassifyWorker(settings, Metrics(), engine=engine)
        await worker.start()
        await worker.wait_joined(30)
        return worker, producer, asyncio.create_task(st_.read(stop))

    st_ = Stage(settings, loop, worker=None, producer=None)
    worker, producer, reader = asyncio.run_coroutine_threadsafe(start(), loop).result(90)
    st_.worker, st_.producer = worker, producer
    try:
        yield st_
    finally:

        async def shutdown() -> None:
            stop.set()
            await reader
            await worker.stop()
            await producer.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# strategies ------------------------------------------------------------------------------------
NOW = datetime.now(UTC)
HOSTILE_CHARS = "\x00\x01\x07\x1b\x7f\u200b\u200e\u202a\u202e\u2066\u2069\ufeff\u0645\u05d0"


def _obj(ident: str, **over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": ident,
        "text": "$NVDA guidance cut; shares slide 6% premarket",
        "source": "wire",
        "published_at": (NOW - timedelta(minutes=5)).isoformat(),
    }
    obj.update(over)
    return {k: v for k, v in obj.items() if v is not None}


@dataclass(frozen=True, repr=False)
class Msg:
    """A message and what must become of it: ``"scored"``, a reason, or ``"any"`` (decoder decides)."""

    raw: bytes
    expect: str
    ident: str = ""

    def __repr__(self) -> str:  # hypothesis prints failing examples; keep 10 MB out of the report
        return f"Msg({self.raw[:60]!r}… {len(self.raw)} B, {self.expect!r}, {self.ident!r})"


def _good(ident: str, text: str = "$AAPL beats estimates; raises guidance") -> Msg:
    return Msg(json.dumps(_obj(ident, text=text)).encode(), "scored", ident)


texts = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(HOSTILE_CHARS), max_size=80)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
json_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@st.composite
def messages(draw: st.DrawFn) -> Msg:
    ident = f"f{draw(st.integers(0, 10**9))}"
    kind = draw(
        st.sampled_from(
            [
                "good",
                "hostile_text",
                "random_bytes",
                "invalid_utf8",
                "nested",
                "wrong_type",
                "missing",
                "timestamp",
                "random_object",
            ]
        )
    )
    if kind == "good":
        return _good(ident)
    if kind == "hostile_text":  # control chars, bidi overrides, RTL scripts around a real sentence
        noise = draw(texts)
        raw = json.dumps(_obj(ident, text=f"{noise} $TSLA recalls 2M cars {noise}")).encode()
        return Msg(raw, "scored", ident)
    if kind == "random_bytes":
        return Msg(draw(st.binary(max_size=200)), "any")
    if kind == "invalid_utf8":
        body = json.dumps(_obj(ident)).encode()
        cut = draw(st.integers(1, len(body) - 1))
        return Msg(
            body[:cut] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + body[cut:],
            "invalid_utf8",
        )
    if kind == "nested":
        depth = draw(st.sampled_from([50, 5_000, 100_000]))
        open_, close = draw(st.sampled_from([('{"a":', "}"), ("[", "]")]))
        raw = (open_ * depth + "1" + close * depth).encode()
        return Msg(raw, "any" if depth == 50 else "invalid_json")
    if kind == "wrong_type":
        name = draw(st.sampled_from(["text", "source", "published_at", "entities"]))
        bad = draw(st.sampled_from([42, 1.5, True, ["x"], {"k": "v"}]))
        if name == "entities" and isinstance(bad, list):
            bad = [1, 2]
        return Msg(json.dumps(_obj(ident, **{name: bad})).encode(), "wrong_type")
    if kind == "missing":
        name = draw(st.sampled_from(["text", "source", "published_at"]))
        obj = _obj(ident)
        del obj[name]
        return Msg(json.dumps(obj).encode(), "missing_field")
    if kind == "timestamp":
        when, reason = draw(
            st.sampled_from(
                [
                    ("0001-01-01T00:00:00Z", "bad_timestamp"),
                    ("1969-12-31T23:59:59Z", "bad_timestamp"),
                    ("9999-12-31T23:59:59Z", "future_timestamp"),
                    ("3000-01-01T00:00:00+14:00", "future_timestamp"),
                ]
            )
        )
        return Msg(json.dumps(_obj(ident, published_at=when)).encode(), reason)
    obj = draw(st.dictionaries(st.sampled_from(["id", "text", "source", "published_at", "x"]), json_values))
    return Msg(json.dumps(obj).encode(), "any")


BATCH = st.lists(messages(), min_size=1, max_size=8)
DUPLICATES = [_good("dup-1"), _good("dup-1", "$AAPL misses; shares fall"), _good("dup-1")]
TEN_MB_TEXT = [
    Msg(json.dumps(_obj("big", text="$XOM " + "oil " * (TEN_MB // 4))).encode(), "too_large"),
    _good("after-big"),
]
LONG_BUT_ALLOWED = [
    _good("long", "$JPM " + "rates " * 3_300),  # 19,805 characters: under the text limit
    Msg(json.dumps(_obj("too-long", text="$JPM " + "rates " * 100_000)).encode(), "field_too_long"),
]  # 600 kB: under the message limit, over the 20,000-character text limit (issue 19 F1)


# the property ----------------------------------------------------------------------------------
@pytest.mark.fuzz
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(batch=BATCH)
@example(batch=DUPLICATES)
@example(batch=TEN_MB_TEXT)
@example(batch=LONG_BUT_ALLOWED)
def test_classify_stage_never_crashes_and_accounts_for_every_message(stage: Stage, batch: list[Msg]) -> None:
    tag = uuid.uuid4().hex[:6]  # ids unique per example, so examples never see each other's output
    batch = [_retag(m, tag) for m in batch]
    decoder = PostDecoder.from_settings(stage.settings.classify)
    expected_ids: Counter[str] = Counter()
    for m in batch:
        verdict = decoder.decode(m.raw)
        if m.expect == "scored" or (m.expect == "any" and not isinstance(verdict, Rejection)):
            assert not isinstance(verdict, Rejection), f"{m!r} should be valid: {verdict}"
            expected_ids[verdict.post.id] += 1
    scored_before = len(stage.scored)
    positions = stage.run(stage.publish([m.raw for m in batch]))
    rejected = [pos for m, pos in zip(batch, positions, strict=True) if _rejected(m, decoder)]

    deadline = time.monotonic() + 90
    while True:
        got = Counter(sp.post.id for sp in stage.scored[scored_before:])
        if all(pos in stage.dead for pos in rejected) and all(got[i] >= n for i, n in expected_ids.items()):
            break
        assert stage.worker.alive, f"the worker crashed: {stage.worker.failed}"
        assert time.monotonic() < deadline, f"not accounted for: scored {got} vs {expected_ids}"
        time.sleep(0.05)

    assert stage.worker.alive
    for m, pos in zip(batch, positions, strict=True):
        letter = stage.dead.get(pos)
        if _rejected(m, decoder):
            assert letter is not None, f"{m!r} not dead-lettered"
            if letter.raw != m.raw:  # oversized payloads keep a prefix and the digest of the whole
                digest = hashlib.sha256(m.raw).hexdigest()
                assert m.raw.startswith(letter.raw) and digest in letter.detail, f"{m!r}: raw not kept"
            assert letter.reason in DEAD_REASONS and letter.detail, letter
            assert letter.topic == stage.settings.topics.posts and letter.stage == "classify"
            if m.expect not in ("any", "scored"):
                assert letter.reason == m.expect, f"{m!r}: {letter.reason} ({letter.detail})"
        else:
            assert letter is None, f"{m!r} dead-lettered as {letter}"
    got = Counter(sp.post.id for sp in stage.scored[scored_before:] if sp.post.id in expected_ids)
    assert got == expected_ids, "each valid message scored once (duplicate ids too)"
    for sp in stage.scored[scored_before:]:
        assert sp.sentiment in ("bearish", "bullish", "neutral") and -1.0 <= sp.score <= 1.0


def _rejected(m: Msg, decoder: PostDecoder) -> bool:
    return isinstance(decoder.decode(m.raw), Rejection)


def _retag(m: Msg, tag: str) -> Msg:
    if not m.ident:
        return m
    new = f"{tag}-{m.ident}"
    return Msg(m.raw.replace(json.dumps(m.ident).encode(), json.dumps(new).encode(), 1), m.expect, new)
