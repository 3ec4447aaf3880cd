"""Helpers of the reliability tests: settings, posts, publishing with acks, waiting, S3 storage."""

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

from aiokafka.structs import ConsumerRecord

from newswatch.demo.broker import EmbeddedBroker, free_port
from newswatch.io.kafka import make_producer
from newswatch.io.schemas import ScoredPost
from newswatch.metrics import Metrics
from newswatch.processes import stop_process
from newswatch.settings import Settings

TICKERS = ("$AAPL", "$TSLA", "$NVDA", "$AMZN", "$JPM", "$XOM")
PHRASES = (
    "{t} beats earnings estimates, shares jump 8% after hours",
    "{t} cut to underperform at Morgan Stanley; price target lowered",
    "{t} announces $5B buyback and raises dividend",
    "Fed holds rates steady; {t} slips in early trading",
)


def post_json(ident: str, i: int = 0, published_at: datetime | None = None, **extra: object) -> bytes:
    """A valid post as the classify stage expects it."""
    when = published_at or datetime.now(UTC) - timedelta(seconds=1)
    obj: dict[str, object] = {
        "id": ident,
        "text": PHRASES[i % len(PHRASES)].format(t=TICKERS[i % len(TICKERS)]),
        "source": ("wire", "social", "blog")[i % 3],
        "published_at": when.isoformat(),
    }
    obj.update(extra)
    return json.dumps(obj).encode()


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample of ``metrics`` (0 when absent)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def scored_ids(records: list[ConsumerRecord[bytes, bytes]]) -> list[str]:
    """Post ids of scored records, duplicates kept."""
    return [ScoredPost.from_json(r.value).post.id for r in records if r.value is not None]


async def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class AckedPublisher:
    """Publishes valid posts at a steady pace; ``acked`` holds only ids the broker acknowledged.

    Send failures (a broker that is down) are counted, not raised: the publisher keeps trying,
    like an upstream producer would, and a post whose send failed is simply not 'acknowledged'.
    """

    settings: Settings
    prefix: str
    per_tick: int = 2
    tick_s: float = 0.1
    acked: list[str] = field(default_factory=list)
    failed: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
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


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "newswatch-test",
    "AWS_SECRET_ACCESS_KEY": "newswatch-test-secret",
    "AWS_DEFAULT_REGION": "eu-west-2",
    "AWS_ALLOW_HTTP": "true",
}


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


MOTO = str(Path(sys.executable).with_name("moto_server"))


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
