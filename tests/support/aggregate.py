"""The aggregator under test: its process, the windows it writes, and the reference they must equal.

The aggregator runs as it does in production: ``python -m newswatch.cli.aggregate`` in a
subprocess (a faust worker), configured by a YAML file. Tests produce ScoredPost JSON
themselves (:func:`produce`) and read the windows topic with a plain consumer
(:class:`WindowReader`); :func:`reference` computes the windows directly from the events.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from newswatch.io.schemas import DeadLetter, Post, ScoredPost, WindowStat
from newswatch.settings import Settings
from tests.support.kafka import committed, produce_records, read_topic
from tests.support.settings import GRACE_MS, HOPPING, TUMBLING_MS

BASE_MS = 1_700_000_000_000 - (1_700_000_000_000 % 60_000)  # a whole minute


def scored(
    post_id: str,
    ts_ms: int,
    score: float,
    *,
    topic: str = "earnings",
    entities: tuple[str, ...] = ("$AAPL",),
    source: str = "wire",
    text: str | None = None,
) -> ScoredPost:
    """A scored post with event time ``ts_ms``; bearish when ``score < -0.2``."""
    sentiment = "bearish" if score < -0.2 else ("bullish" if score > 0.2 else "neutral")
    post = Post(
        id=post_id,
        text=text if text is not None else f"post {post_id} about {' '.join(entities)}",
        source=source,
        published_at=datetime.fromtimestamp(ts_ms / 1000, UTC),
        url=f"https://example.test/{post_id}",
        entities=entities,
    )
    return ScoredPost(
        post=post,
        topic=topic,
        topic_prob=0.9,
        sentiment=sentiment,  # type: ignore[arg-type]
        sentiment_probs={"bearish": 0.1, "bullish": 0.1, "neutral": 0.8},
        score=score,
        model_version="test",
        record_ms=ts_ms,
        scored_ms=ts_ms,
        inference_ms=1.0,
    )


async def produce(settings: Settings, posts: list[ScoredPost | bytes]) -> None:
    """Publish in order (one partition keeps the order), keyed by post id, timestamp = event time."""
    records: list[tuple[bytes | None, bytes, int | None]] = []
    for p in posts:
        if isinstance(p, bytes):
            records.append((b"bad", p, None))
        else:
            records.append((p.post.id.encode(), p.to_json(), int(p.post.published_at.timestamp() * 1000)))
    await produce_records(settings.kafka, settings.topics.scored, records)


Ident = tuple[str, str, str, int]


@dataclass
class RefWindow:
    """One expected window: the posts in it."""

    scores: list[tuple[float, str, bool]] = field(default_factory=list)  # (score, id, bearish)


@dataclass
class Reference:
    """Windows computed directly from the events, with the documented semantics."""

    windows: dict[Ident, RefWindow]
    watermark: int
    late: int
    duplicates: int

    def finals(self) -> dict[Ident, RefWindow]:
        """Windows closed by the final watermark."""
        return {i: w for i, w in self.windows.items() if i[3] + _duration(i[2]) + GRACE_MS <= self.watermark}


def _duration(window: str) -> int:
    return int(window.split("_")[1])


def _specs() -> list[tuple[str, int, int]]:
    specs = [(f"tumbling_{TUMBLING_MS}", TUMBLING_MS, TUMBLING_MS)]
    specs += [(f"hopping_{d}_{s}", d, s) for d, s in HOPPING]
    return specs


async def read_dead_letters(settings: Settings, n: int, timeout_s: float = 30.0) -> list[DeadLetter]:
    """The first ``n`` records of the dead-letter topic."""
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.dead_letter
    records = await read_topic(bootstrap, topic, lambda rs: len(rs) >= n, timeout_s)
    return [DeadLetter.from_json(r.value) for r in records]


def reference(posts: list[ScoredPost | bytes]) -> Reference:
    """Process ``posts`` in order: duplicates by (source, id), late = older than watermark - grace.

    The watermark is the smallest of the sources' largest event times (every source active,
    as in a test that runs in seconds), never moving backwards.
    """
    wm: int | None = None
    source_max: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    late = dups = 0
    windows: dict[Ident, RefWindow] = defaultdict(RefWindow)
    for p in posts:
        if isinstance(p, bytes):
            continue
        ts = int(p.post.published_at.timestamp() * 1000)
        if (p.post.source, p.post.id) in seen:
            dups += 1
            continue
        if wm is not None and ts < wm - GRACE_MS:
            late += 1
            continue
        seen.add((p.post.source, p.post.id))
        source_max[p.post.source] = max(source_max.get(p.post.source, ts), ts)
        candidate = min(source_max.values())
        wm = candidate if wm is None else max(wm, candidate)
        keys = [("topic", p.topic), *(("entity", e) for e in dict.fromkeys(p.post.entities))]
        keys += [("source", p.post.source), ("global", "all")]
        for name, d, s in _specs():
            start = (ts // s) * s
            while start > ts - d:
                for kind, key in keys:
                    windows[(kind, key, name, start)].scores.append(
                        (p.score, p.post.id, p.sentiment == "bearish")
                    )
                start -= s
    assert wm is not None
    return Reference(dict(windows), wm, late, dups)


def assert_matches(stat: WindowStat, ref: RefWindow) -> None:
    """A window record equals its reference: count, mean, negative share, examples."""
    n = len(ref.scores)
    assert stat.count == n, stat
    assert stat.mean_score == pytest.approx(sum(s for s, _, _ in ref.scores) / n, abs=1e-9)
    assert stat.negative_share == pytest.approx(sum(1 for *_, b in ref.scores if b) / n)
    expected_examples = [pid for _, pid, _ in sorted(ref.scores)[:3]]
    assert [e["id"] for e in stat.examples] == expected_examples
    assert all(len(e["text"]) <= 280 for e in stat.examples)


def assert_finals_equal(finals: dict[Ident, WindowStat], ref: Reference) -> None:
    """Every final window of the reference is there and equals it; nothing else is final
    (finals exist only for windows that hold posts)."""
    for ident, ref_window in ref.finals().items():
        assert_matches(finals[ident], ref_window)
    assert set(finals) <= set(ref.windows), "no final window without posts"


class WindowReader:
    """Reads the windows topic from the start; keeps the latest record per window."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.latest: dict[Ident, WindowStat] = {}
        self.records = 0
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> WindowReader:
        self._consumer = AIOKafkaConsumer(
            self.settings.topics.windows,
            bootstrap_servers=self.settings.kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def poll(self) -> None:
        """Read what is there now."""
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for r in records:
                stat = WindowStat.from_json(r.value)
                assert r.key == f"{stat.kind}:{stat.key}:{stat.window}".encode()
                self.records += 1
                self.latest[(stat.kind, stat.key, stat.window, stat.start_ms)] = stat

    async def until(self, condition: Any, timeout_s: float = 60.0) -> None:
        """Poll until ``condition(self)`` holds, or fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"windows topic: condition not met within {timeout_s} s")
            await self.poll()

    def finals(self) -> dict[Ident, WindowStat]:
        """Latest records that are final."""
        return {i: s for i, s in self.latest.items() if s.final}


class AggregatorProcess:
    """``python -m newswatch.cli.aggregate`` in a subprocess, configured by a YAML file."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.config = workdir / "aggregate.yaml"
        data = settings.model_dump(mode="json", exclude={"models", "notify", "demo", "classify"})
        self.config.write_text(yaml.safe_dump(data))
        self.log = workdir / "aggregate.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker (its /readyz answers 200 once it has its partitions)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "newswatch.cli.aggregate", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.metrics.port}"

    async def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Poll ``/readyz`` until it answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"aggregator exited {self.proc.returncode}:\n{self.log.read_text()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.metrics_url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"aggregator not ready in {timeout_s} s:\n{self.log.read_text()[-4000:]}")

    def metric(self, name: str) -> float:
        """A sample value from ``/metrics`` (0 when absent)."""
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=5) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"aggregator ignored signal {sig}:\n{self.log.read_text()[-4000:]}"
            ) from None


def scenario() -> list[ScoredPost | bytes]:
    """~300 events over 2 minutes: 5 tickers, 3 topics, 2 sources, out-of-order, duplicates, late, bad."""
    events: list[ScoredPost | bytes] = []
    tickers = ["$AAPL", "$MSFT", "$NVDA", "$TSLA", "$AMZN"]
    topics = ["earnings", "macro", "m&a"]
    for i in range(300):
        ts = BASE_MS + i * 400 + (((i * 7919) % 11) - 5) * 250  # up to 1.25 s out of order
        score = round(((i * 37) % 200) / 100.0 - 1.0, 2)
        events.append(
            scored(
                f"p{i}",
                ts,
                score,
                topic=topics[i % 3],
                entities=(tickers[i % 5],) if i % 4 else (tickers[i % 5], tickers[(i + 1) % 5]),
                source="wire" if i % 2 else "social",
                text=("long text " * 60) if i % 50 == 0 else None,
            )
        )
        if i % 25 == 0 and i:
            source = "wire" if (i - 3) % 2 else "social"
            events.append(scored(f"p{i - 3}", BASE_MS + (i - 3) * 400, 0.0, source=source))  # same post
        if i in (150, 220):
            events.append(scored(f"late{i}", BASE_MS + (i - 40) * 400, -0.9))  # 16 s behind: beyond grace
        if i == 180:
            events.append(b"{not json")
            events.append(b'{"id": "x"}')
    # Far in the future, on both sources (each feed holds the watermark): closes every earlier window.
    events.append(scored("flush", BASE_MS + 400 * 300 + 60_000, 0.5, entities=("$FLUSH",)))
    events.append(scored("flush", BASE_MS + 400 * 300 + 60_000, 0.5, entities=("$FLUSH",), source="social"))
    return events


def expected_finals_present(ref: Reference) -> Any:
    wanted = set(ref.finals())
    return lambda reader: wanted <= set(reader.finals())


async def committed_offset(settings: Settings) -> int:
    """Offset the aggregator's group committed on the (single-partition) scored topic."""
    return await committed(
        settings.kafka.bootstrap_servers, settings.aggregate.app_id, settings.topics.scored
    )


def surge_windows(
    key: str, history: int = 30, surge: int = 2, after: int = 6
) -> list[tuple[bytes, bytes, int]]:
    """Final one-minute windows of one topic, as the aggregator writes them: a steady history,
    a volume surge, then calm again (enough for the detection stage to fire and resolve)."""
    minute = 60_000
    first = (int(time.time() * 1000) // minute - (history + surge + after)) * minute
    out = []
    for i in range(history + surge + after):
        count = 3_000 if history <= i < history + surge else 95 + (i * 7) % 11
        stat = WindowStat(
            kind="topic",
            key=key,
            window="tumbling_60000",
            start_ms=first + i * minute,
            end_ms=first + (i + 1) * minute,
            count=count,
            mean_score=0.1 + ((i * 3) % 5) / 100,
            negative_share=0.2 + ((i * 5) % 7) / 100,
            final=True,
        )
        out.append((f"topic:{key}:tumbling_60000".encode(), stat.to_json(), stat.end_ms))
    return out
