"""The whole pipeline on the real embedded broker: posts in, alerts out at a real HTTP receiver.

A few hundred generated posts spanning 18 minutes of event time (published as fast as
possible) carry a scripted negative surge about $NVDA, plus 20 malformed messages.
Every valid post must be scored, every malformed one dead-lettered with its reason,
the surge must reach a real webhook receiver on 127.0.0.1 as a signed alert, and the
classify stage's ``/metrics`` must show the counts.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiokafka.structs import ConsumerRecord

from newswatch.alerts.notify import Notifier
from newswatch.alerts.sinks.webhook import verify
from newswatch.alerts.stage import DetectStage
from newswatch.demo.console import WebhookReceiver
from newswatch.demo.generator import Incident, StreamGenerator
from newswatch.io.http import StageServer
from newswatch.io.kafka import create_topics, make_producer
from newswatch.io.schemas import DeadLetter, ScoredPost
from newswatch.metrics import Metrics
from newswatch.models.engine import ClassifierEngine
from newswatch.settings import Settings
from newswatch.settings.alerts import AlertSettings, NotifySettings
from newswatch.settings.stream import AggregateSettings, ClassifySettings
from newswatch.stream.classify import ClassifyWorker
from tests.support.aggregate import AggregatorProcess
from tests.support.kafka import read_topic
from tests.support.poll import wait_until
from tests.support.settings import aggregate_settings, topic_settings

SECRET = "whsec_" + base64.b64encode(b"end-to-end-signing-key!!").decode()
MALFORMED = [
    b"{not json",
    b"\xff\xfe\xfd",
    b"[]",
    b'{"id": "x1"}',
    b'{"id": "x2", "text": "", "source": "s", "published_at": "2026-01-01T00:00:00Z"}',
]


def _settings(bootstrap: str, unique: str, tmp: Path, webhook_url: str) -> Settings:
    base = aggregate_settings(bootstrap, unique, tmp, partitions=2)
    return base.model_copy(
        update={
            "topics": topic_settings(unique, prefix="e2e-"),
            "classify": ClassifySettings(group_id=f"e2e-classify-{unique}", batch_max_wait_ms=50),
            "aggregate": AggregateSettings(
                app_id=f"e2e-agg-{unique}",
                grace_ms=5_000,
                emit_interval_ms=200,
                commit_interval_ms=200,
                data_dir=str(tmp / "faust"),
            ),
            "alerts": AlertSettings(group_id=f"e2e-detect-{unique}", warmup_windows=5),
            "notify": NotifySettings(
                group_id=f"e2e-notify-{unique}",
                webhook_urls=(webhook_url,),  # type: ignore[arg-type]
                webhook_secret=SECRET,  # type: ignore[arg-type]
                group_wait_s=0.5,
                delivery_log_topic=f"e2e-deliveries-{unique}",
            ),
        }
    )


def _posts() -> list[dict[str, object]]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=20)
    gen = StreamGenerator(
        seed=11,
        rate_per_s=0.5,
        start=start,
        daily_amplitude=0.0,
        incident=Incident("$NVDA", start_s=14 * 60, duration_s=120, rate_per_s=0.6),
    )
    out = []
    for t, post in gen.posts():
        if t > 18 * 60:
            break
        out.append(post.to_dict())
    return out


@pytest.mark.slow
async def test_posts_in_alert_out(bootstrap: str, unique: str, tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    settings = _settings(bootstrap, unique, tmp_path, receiver.url)
    await create_topics(settings.kafka, settings.topics.all())
    posts = _posts()
    assert 400 < len(posts) < 900
    bad = [MALFORMED[i % len(MALFORMED)] for i in range(20)]

    metrics = Metrics()
    engine = ClassifierEngine.load(settings.models)
    aggregator = AggregatorProcess(settings, tmp_path)
    aggregator.start()
    stop = asyncio.Event()
    try:
        async with (
            ClassifyWorker(settings, metrics, engine=engine) as worker,
            StageServer(metrics.registry, ready=lambda: worker.ready) as server,
            DetectStage(settings, Metrics()) as detect,
            Notifier(settings, Metrics()) as notifier,
        ):
            await aggregator.wait_ready()
            tasks = [asyncio.create_task(detect.run(stop)), asyncio.create_task(notifier.run(stop))]
            producer = make_producer(settings.kafka)
            await producer.start()
            try:
                for i, post in enumerate(posts):
                    await producer.send(
                        settings.topics.posts, json.dumps(post).encode(), key=str(post["id"]).encode()
                    )
                    if i % 30 == 0 and bad:
                        await producer.send(settings.topics.posts, bad.pop())
                for raw in bad:
                    await producer.send(settings.topics.posts, raw)
                await producer.flush()
            finally:
                await producer.stop()

            def nvda_firing() -> bool:
                return any(
                    p.get("status") == "firing" and any(a["key"] == "$NVDA" for a in p["alerts"])
                    for p in receiver.received
                )

            await wait_until(
                nvda_firing, 120, "the $NVDA surge alert at the webhook receiver", interval_s=0.2
            )
            stop.set()
            await asyncio.gather(*tasks)

            # Every valid post scored at least once, none lost.
            ids = {str(p["id"]) for p in posts}

            def all_scored(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
                return {ScoredPost.from_json(r.value).post.id for r in records if r.value} >= ids

            scored = await read_topic(bootstrap, settings.topics.scored, all_scored, timeout_s=60)
            assert {ScoredPost.from_json(r.value).post.id for r in scored if r.value} >= ids

            # Every malformed message dead-lettered with a reason and its exact bytes.
            letters = await read_topic(bootstrap, settings.topics.dead_letter, lambda rs: len(rs) >= 20)
            decoded = [DeadLetter.from_json(r.value) for r in letters if r.value]
            assert sorted(d.raw for d in decoded) == sorted(MALFORMED[i % len(MALFORMED)] for i in range(20))
            assert all(d.reason for d in decoded)

            # /metrics over real HTTP shows the counts.
            async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            dead = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("newswatch_stream_dead_lettered_total{")
            )
            assert dead == 20
            consumed = metrics.registry.get_sample_value(
                "newswatch_stream_messages_consumed_total", {"stage": "classify"}
            )
            assert consumed is not None and consumed >= len(posts) + 20
    finally:
        stop.set()
        aggregator.stop()
        await receiver.stop()

    # The alert is signed per Standard Webhooks and carries the evidence on-call needs.
    index = next(
        i
        for i, p in enumerate(receiver.received)
        if p.get("status") == "firing" and any(a["key"] == "$NVDA" for a in p["alerts"])
    )
    assert verify(SECRET, receiver.headers[index], receiver.bodies[index])
    alert = next(a for a in receiver.received[index]["alerts"] if a["key"] == "$NVDA")
    assert alert["examples"], "the alert carries example posts"
    assert alert["dashboard_url"]
