"""Kafka helpers of the tests: read a whole topic, publish posts and records, count what came
through, committed offsets, and a broker on durable (local S3) storage."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from newswatch.demo.broker import EmbeddedBroker, free_port
from newswatch.io.kafka import make_producer, publish
from newswatch.io.schemas import ScoredPost
from newswatch.metrics import Metrics
from newswatch.processes import stop_process
from newswatch.settings import KafkaSettings, Settings

TICKERS = ("$AAPL", "$TSLA", "$NVDA", "$AMZN", "$JPM", "$XOM")
PHRASES = (
    "{t} beats earnings estimates, shares jump 8% after hours",
    "{t} cut to underperform at Morgan Stanley; price target lowered",
    "{t} announces $5B buyback and raises dividend",
    "Fed holds rates steady; {t} slips in early trading",
    "{t} faces SEC probe over accounting practices",
    "{t} CEO to step down at year end",
)

Record = ConsumerRecord[bytes, bytes]

# ------------------------------------------------------------------------------------------- posts


def post_json(ident: str, i: int = 0, published_at: datetime | None = None, **extra: object) -> bytes:
    """A valid post as the classify stage expects it (the ``i``-th phrase and ticker)."""
    when = published_at or datetime.now(UTC) - timedelta(seconds=1)
    obj: dict[str, object] = {
        "id": ident,
        "text": PHRASES[i % len(PHRASES)].format(t=TICKERS[i % len(TICKERS)]),
        "source": ("wire", "social", "blog")[i % 3],
        "published_at": when.isoformat(),
    }
    obj.update(extra)
    return json.dumps(obj).encode()


def valid_posts(n: int, prefix: str = "p") -> list[tuple[str, bytes]]:
    """``(id, post)`` of ``n`` valid posts published over the last ``n`` seconds, oldest first."""
    now = datetime.now(UTC)
    return [(f"{prefix}{i}", post_json(f"{prefix}{i}", i, now - timedelta(seconds=n - i))) for i in range(n)]


# ------------------------------------------------------------------------------------------ publish


async def produce_records(
    kafka: KafkaSettings, topic: str, records: list[tuple[bytes | None, bytes, int | None]]
) -> None:
    """Publish ``(key, value, timestamp_ms)`` records in order and wait for every acknowledgement."""
    producer = make_producer(kafka)
    await producer.start()
    try:
        await publish(producer, topic, records)
    finally:
        await producer.stop()


async def produce_now(kafka: KafkaSettings, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
    """Publish ``(key, value)`` records stamped with the current time."""
    now = int(time.time() * 1000)
    await produce_records(kafka, topic, [(k, v, now) for k, v in items])


def send_records(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes, int]]) -> None:
    """:func:`produce_records` for synchronous tests."""
    asyncio.run(produce_records(kafka, topic, list(records)))  # type: ignore[arg-type]


def send_posts(kafka: KafkaSettings, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    """:func:`produce_now` for synchronous tests."""
    asyncio.run(produce_now(kafka, topic, list(items)))  # type: ignore[arg-type]


@dataclass
class AckedPublisher:
    """Publishes valid posts at a steady pace; ``acked`` holds only ids the broker acknowledged.

    Send failures (a broker that is down) are counted, not raised: the publisher keeps trying,
    like an upstream producer would, and a post whose send failed is simply not 'acknowledged'.
    With ``strict`` (a broker meant to stay up) a failed send fails the test instead.
    """

    settings: Settings
    prefix: str
    per_tick: int = 2
    tick_s: float = 0.1
    acked: list[str] = field(default_factory=list)
    failed: int = 0
    strict: bool = False
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        if self.strict:
            producer = make_producer(self.settings.kafka)
        else:
            producer = make_producer(self.settings.kafka, request_timeout_ms=3_000, retry_backoff_ms=200)
        await producer.start()
        try:
            n = 0
            while not self._stop.is_set():
                ids = [f"{self.prefix}{n}-{j}" for j in range(self.per_tick)]
                now = int(time.time() * 1000)
                try:
                    futs = [
                        await producer.send(
                            self.settings.topics.posts, post_json(i, n), key=i.encode(), timestamp_ms=now
                        )
                        for i in ids
                    ]
                    await asyncio.gather(*futs)
                    self.acked += ids
                except Exception:  # a broker outage: not acknowledged, go on
                    if self.strict:
                        raise
                    self.failed += len(ids)
                    await asyncio.sleep(0.2)
                n += 1
                await asyncio.sleep(self.tick_s)
        finally:
            await producer.stop()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None


# --------------------------------------------------------------------------------------------- read


async def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Record]], bool],
    timeout_s: float = 30.0,
) -> list[Record]:
    """Every record of ``topic`` from the beginning, read until ``until(records)`` or the deadline."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[Record] = []
    try:
        parts = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout_s
        while not parts and time.monotonic() < deadline:
            await consumer.force_metadata_update()  # type: ignore[no-untyped-call]
            parts = consumer.partitions_for_topic(topic)
        assert parts, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while time.monotonic() < deadline and not until(records):
            batch = await consumer.getmany(timeout_ms=200)
            for rs in batch.values():
                records.extend(rs)
    finally:
        await consumer.stop()
    return records


async def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> int:
    """The offsets ``group`` committed on ``topic``'s first ``partitions`` partitions, summed."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([(await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)])
    finally:
        await consumer.stop()


def scored_ids(records: list[Record]) -> list[str]:
    """Post ids of scored records, duplicates kept."""
    return [ScoredPost.from_json(r.value).post.id for r in records if r.value is not None]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample of ``metrics`` (0 when absent)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


# ------------------------------------------------------------------------------ a broker on S3

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "newswatch-test",
    "AWS_SECRET_ACCESS_KEY": "newswatch-test-secret",
    "AWS_DEFAULT_REGION": "eu-west-2",
    "AWS_ALLOW_HTTP": "true",
}
MOTO = str(Path(sys.executable).with_name("moto_server"))


@contextmanager
def moto_s3(moto_bin: str, bucket: str) -> Iterator[dict[str, str]]:
    """A local S3 (``moto_server`` on loopback) with ``bucket`` created; yields the broker env."""
    port = free_port()
    proc = subprocess.Popen(
        [moto_bin, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield {**AWS_ENV, "AWS_ENDPOINT": endpoint}
    finally:
        stop_process(proc)


@contextmanager
def s3_broker(log_file: Path, bucket: str = "tansu") -> Iterator[EmbeddedBroker]:
    """An embedded broker on durable ``s3://bucket/`` storage (a local moto server), started."""
    with moto_s3(MOTO, bucket) as env:
        broker = EmbeddedBroker(storage=f"s3://{bucket}/", env=env, log_file=log_file)
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()
