"""``newswatch demo``: the whole pipeline on one machine, with a scripted incident.

It starts the embedded broker (unless ``--bootstrap-servers`` is given), every stage
(classify, aggregate, alerts run, notify), a local webhook receiver and the stream
generator, then shows live per-topic and per-ticker sentiment and volume and the
alerts as they are delivered. Time scales are compressed so the incident is caught
within a couple of minutes: 10 s tumbling buckets, a 60 s/10 s hopping window and a
50 s detector warm-up by default; every number of the demo is an option of the ``demo``
settings section (see :func:`demo_settings`). With ``--no-ui`` it prints
one JSON summary line at the end, listing the notifications the receiver got;
``--no-incident`` runs the same stream without the scripted incident. Before it stops,
the demo waits until the notifier has read every alert written and delivers what it
gathered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer

from newswatch.demo.broker import EmbeddedBroker, free_port
from newswatch.demo.console import LiveStats, WebhookReceiver, render
from newswatch.demo.generator import StreamGenerator
from newswatch.errors import NewswatchError
from newswatch.io.kafka import create_topics, make_producer
from newswatch.io.logtopic import read_to_end
from newswatch.io.schemas import DeadLetter, ScoredPost, WindowStat
from newswatch.metrics import Metrics
from newswatch.processes import stop_process
from newswatch.settings import Settings
from newswatch.settings.stream import window_name

__all__ = ["DemoOptions", "demo_settings", "run_demo", "stream_start"]

#: Malformed messages the demo mixes in (one in ``_BAD_EVERY``) to show dead-lettering.
_BAD_MESSAGES: tuple[bytes, ...] = (
    b"{not json",
    b"\xff\xfe\xfa invalid utf-8",
    b'{"id": "no-text", "source": "x", "published_at": "2026-01-01T00:00:00Z"}',
    b'{"id": "empty", "text": "   ", "source": "x", "published_at": "2026-01-01T00:00:00Z"}',
    b"[1, 2, 3]",
)
_BAD_EVERY = 150


class DemoError(NewswatchError):
    """The demo could not start a part of the pipeline."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``newswatch demo`` was asked to do."""

    duration_s: float | None = None  # None: the demo section's duration_s
    ui: bool = True
    bootstrap_servers: str | None = None
    drain_timeout_s: float = 30.0
    incident: bool = True


def demo_settings(settings: Settings, bootstrap: str, embedded: bool, webhook_url: str) -> Settings:
    """The user's settings with the demo's compressed time scales (the ``demo`` section) and
    local receiver."""
    demo = settings.demo
    kafka = settings.kafka.model_copy(
        update={
            "bootstrap_servers": bootstrap,
            "broker_compat": "tansu" if embedded else settings.kafka.broker_compat,
            "session_timeout_ms": 6_000,
            "heartbeat_interval_ms": 1_000,
        }
    )
    aggregate = settings.aggregate.model_copy(
        update={
            "tumbling_ms": demo.tumbling_ms,
            "hopping": ((demo.hopping_ms, demo.tumbling_ms),),
            "grace_ms": demo.grace_ms,
            "data_dir": tempfile.mkdtemp(prefix="newswatch-demo-agg-"),
        }
    )
    alerts = settings.alerts.model_copy(
        update={
            "windows": (window_name(demo.tumbling_ms, demo.tumbling_ms),),
            "warmup_windows": demo.warmup_windows,
            "cooldown_s": demo.cooldown_s,
            "dashboard_url_template": "http://localhost:3000/d/newswatch?var-key={key}&from={start_ms}&to={end_ms}",
        }
    )
    # One window plus grace: the keys an incident moves arrive in its first notification.
    incident_wait_s = (demo.tumbling_ms + demo.grace_ms) / 1000
    notify = settings.notify.model_copy(
        update={"webhook_urls": (webhook_url,), "group_wait_s": 2.0, "incident_wait_s": incident_wait_s}
    )
    return settings.model_copy(
        update={"kafka": kafka, "aggregate": aggregate, "alerts": alerts, "notify": notify}
    )


def _aggregator_config(settings: Settings, path: Path, metrics_port: int) -> None:
    data = settings.model_dump(mode="json", include={"kafka", "topics", "aggregate", "alerts"})
    data["metrics"] = {**settings.metrics.model_dump(mode="json"), "port": metrics_port}
    path.write_text(yaml.safe_dump(data))


@contextlib.asynccontextmanager
async def _aggregator(settings: Settings, workdir: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """The faust aggregator as a child process (faust owns its event loop)."""
    cfg = workdir / "aggregate.yaml"
    _aggregator_config(settings, cfg, free_port())
    log = (workdir / "aggregate.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "newswatch.cli.main", "--config", str(cfg), "aggregate"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")},
    )
    try:
        yield proc
    finally:
        await asyncio.to_thread(stop_process, proc, 20)
        log.close()


def stream_start(now: datetime, tumbling_ms: int) -> datetime:
    """The first tumbling-window boundary at or after ``now``: where the demo's stream starts.

    Every key of the demo starts at the same instant. Started mid-window, each key's first
    window would hold only part of a window's posts, and the detectors would learn that
    part-window as the key's normal level (a start-up artefact a stream running for hours never
    shows): a burst soon after could then read as noise.

    >>> stream_start(datetime(2026, 1, 1, 12, 0, 4, 500_000, tzinfo=UTC), 10_000).time()
    datetime.time(12, 0, 10)
    >>> stream_start(datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC), 10_000).time()
    datetime.time(12, 0, 10)
    """
    now_ms = round(now.timestamp() * 1000)
    return datetime.fromtimestamp((now_ms + (-now_ms % tumbling_ms)) / 1000, UTC)


async def _produce(
    settings: Settings, stats: LiveStats, duration_s: float, stop: asyncio.Event, incident: bool = True
) -> None:
    """Publish generated posts in real time (record timestamp = publish time), from the next
    tumbling-window boundary on (see :func:`stream_start`)."""
    start = stream_start(datetime.now(UTC), settings.demo.tumbling_ms)
    await asyncio.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))  # at most one window
    gen = StreamGenerator.from_settings(settings.demo, start, incident=incident)
    producer = make_producer(settings.kafka, linger_ms=20)
    await producer.start()
    started = time.monotonic()
    try:
        for n, (offset_s, post) in enumerate(gen.posts()):
            if offset_s > duration_s or stop.is_set():
                break
            delay = started + offset_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the generator, not synchronisation
            payload = json.dumps(post.to_dict()).encode()
            await producer.send(settings.topics.posts, payload, key=post.id.encode())
            stats.posts_in += 1
            if n % _BAD_EVERY == _BAD_EVERY - 1:
                await producer.send(
                    settings.topics.posts, _BAD_MESSAGES[(n // _BAD_EVERY) % len(_BAD_MESSAGES)]
                )
                stats.posts_in += 1
                stats.malformed_in += 1
        await producer.flush()
    finally:
        await producer.stop()


async def _watch(settings: Settings, stats: LiveStats, embedded: bool, stop: asyncio.Event) -> None:
    """Fold the scored, windows, dead-letter and alerts topics into ``stats``."""
    t = settings.topics
    consumer = AIOKafkaConsumer(
        t.scored,
        t.windows,
        t.dead_letter,
        t.alerts,
        **settings.kafka.client_kwargs(),
        auto_offset_reset="earliest" if embedded else "latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=250, max_records=2_000)
            for tp, records in batches.items():
                for r in records:
                    if r.value is None:
                        continue
                    if tp.topic == t.scored:
                        stats.on_scored(ScoredPost.from_json(r.value))
                    elif tp.topic == t.windows:
                        stats.on_window(WindowStat.from_json(r.value))
                    elif tp.topic == t.dead_letter:
                        stats.on_dead_letter(DeadLetter.from_json(r.value).reason)
                    else:
                        stats.on_alert_event(json.loads(r.value))
    finally:
        await consumer.stop()


async def _topic_size(settings: Settings, topic: str) -> int:
    """Records in ``topic`` (the demo's topics are never compacted: every record is still there)."""
    consumer = AIOKafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        return len(await read_to_end(consumer, topic))
    finally:
        await consumer.stop()


def _notify_consumed(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("newswatch_stream_messages_consumed_total", {"stage": "notify"})
    return value or 0.0


async def _wait_for(condition: Any, timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll ``condition()`` until true or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(interval_s)
    return bool(condition())


async def _run(settings: Settings, options: DemoOptions, bootstrap: str, embedded: bool) -> dict[str, Any]:
    from newswatch.alerts.notify import Notifier
    from newswatch.alerts.stage import DetectStage
    from newswatch.models.engine import ClassifierEngine
    from newswatch.stream.classify import ClassifyWorker

    demo = settings.demo
    stats = LiveStats(window_name=window_name(demo.hopping_ms, demo.tumbling_ms))
    receiver = WebhookReceiver(stats)
    await receiver.start()
    settings = demo_settings(settings, bootstrap, embedded, receiver.url)
    metrics = Metrics(top_k_entities=settings.metrics.top_k_entities)
    stop = asyncio.Event()
    workdir = Path(tempfile.mkdtemp(prefix="newswatch-demo-"))
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not options.ui else (lambda msg: None)
    try:
        await create_topics(settings.kafka, settings.topics.all())
        engine = await asyncio.to_thread(ClassifierEngine.load, settings.models)
        say(f"demo: model {engine.model_version}; broker {bootstrap}; webhook {receiver.url}")
        async with (
            _aggregator(settings, workdir) as agg,
            ClassifyWorker(settings, metrics, engine=engine) as worker,
            DetectStage(settings, metrics) as detect,
            Notifier(settings, metrics) as notifier,
        ):
            await worker.wait_joined()
            stop_detect = asyncio.Event()
            detecting = asyncio.create_task(detect.run(stop_detect))
            tasks = [
                asyncio.create_task(notifier.run(stop)),
                asyncio.create_task(_watch(settings, stats, embedded, stop)),
            ]
            producer = asyncio.create_task(
                _produce(
                    settings,
                    stats,
                    options.duration_s if options.duration_s is not None else demo.duration_s,
                    stop,
                    incident=options.incident,
                )
            )
            if options.ui:
                await _live(stats, producer)
            else:
                await producer
            valid = stats.posts_in - stats.malformed_in
            await _wait_for(
                lambda: stats.scored >= valid and stats.dead_lettered >= stats.malformed_in,
                options.drain_timeout_s,
            )
            if agg.poll() is not None:
                raise DemoError(
                    f"the aggregator exited with code {agg.returncode}; see {workdir}/aggregate.log"
                )
            # Drain: no new alerts, the notifier reads every alert written, then delivers what it holds.
            stop_detect.set()
            await asyncio.gather(detecting, return_exceptions=True)
            written = await _topic_size(settings, settings.topics.alerts)
            if not await _wait_for(
                lambda: _notify_consumed(metrics) >= written and stats.alert_events >= written,
                options.drain_timeout_s,
            ):
                say(f"demo: the notifier read fewer than {written} alerts in {options.drain_timeout_s:g} s")
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await notifier.drain()
            for inc in notifier.incidents.incidents.values() if notifier.incidents is not None else ():
                stats.on_incident(inc.paged or (), (m.firing.idempotency_key for m in inc.members.values()))
    finally:
        stop.set()
        await receiver.stop()
    return stats.summary()


async def _live(stats: LiveStats, producer: asyncio.Task[None]) -> None:
    from rich.live import Live

    with Live(render(stats), refresh_per_second=4, screen=False) as live:
        while not producer.done():
            live.update(render(stats))
            await asyncio.sleep(0.25)  # screen refresh rate
        live.update(render(stats))
    await producer


def run_demo(settings: Settings, options: DemoOptions) -> dict[str, Any]:
    """Run the demo to completion and return its summary."""
    if options.bootstrap_servers:
        return asyncio.run(_run(settings, options, options.bootstrap_servers, embedded=False))
    with EmbeddedBroker() as broker:
        return asyncio.run(_run(settings, options, broker.bootstrap_servers, embedded=True))
