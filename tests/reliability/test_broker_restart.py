"""Broker restart while classify runs: the embedded broker on durable S3 storage (a local moto server)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from newswatch.io.kafka import create_topics
from newswatch.metrics import Metrics
from newswatch.models.engine import ClassifierEngine
from newswatch.stream.classify import ClassifyWorker
from tests.support.kafka import AckedPublisher, read_topic, s3_broker, scored_ids, value
from tests.support.poll import wait_until
from tests.support.settings import settings_for


@pytest.mark.fault
async def test_broker_restart_on_s3_storage_loses_no_acknowledged_post(
    unique: str, engine: ClassifierEngine, tmp_path: Path
) -> None:
    """SIGKILL the broker mid-stream, restart it on the same port and storage: classify resumes by itself."""
    with s3_broker(tmp_path / "tansu.log") as broker:
        try:
            settings = settings_for(broker.bootstrap_servers, unique, batch_size=8, batch_max_wait_ms=50)
            await create_topics(settings.kafka, settings.topics.all())
            metrics = Metrics()
            publisher = AckedPublisher(settings, "b")
            async with ClassifyWorker(settings, metrics, engine=engine) as worker:
                await worker.wait_joined(30)
                publisher.start()
                produced = "newswatch_stream_messages_produced_total"
                await wait_until(lambda: value(metrics, produced, stage="classify") >= 30, 60, "30 scored")
                acked_before = len(publisher.acked)

                broker.stop(kill=True)  # a crash: nothing flushed on the way out
                down_at = time.monotonic()
                await wait_until(lambda: publisher.failed > 0, 30, "the publisher to notice the outage")
                broker.start()  # same port, same S3 bucket
                restart_s = time.monotonic() - down_at

                # the stream flows on after the restart and the worker scores it without help
                await wait_until(
                    lambda: len(publisher.acked) >= acked_before + 40, 60, "40 posts acked after"
                )
                scored_after = value(metrics, produced, stage="classify")
                await wait_until(
                    lambda: value(metrics, produced, stage="classify") >= scored_after + 20,
                    90,
                    "the worker to score after the restart",
                )
                await publisher.stop()
                acked = set(publisher.acked)
                scored = await read_topic(
                    broker.bootstrap_servers,
                    settings.topics.scored,
                    lambda rs: acked <= set(scored_ids(rs)),
                    timeout_s=90,
                )
                assert worker.alive, f"the worker failed: {worker.failed}"
        finally:
            await publisher.stop()
    ids = scored_ids(scored)
    lost = acked - set(ids)
    assert not lost, f"lost {len(lost)} acknowledged posts of {len(acked)}: {sorted(lost)[:10]}"
    assert publisher.failed > 0, "the outage was visible to producers"
    assert restart_s < 30
    # records scored before the crash are still in the scored topic (durable storage)
    assert len(ids) >= len(acked)
