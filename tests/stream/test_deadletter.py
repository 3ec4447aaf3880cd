"""The dead-letter writer against the real broker."""

from __future__ import annotations

import hashlib

from newswatch.io.deadletter import DeadLetterWriter
from newswatch.io.kafka import create_topics, make_producer
from newswatch.io.schemas import DeadLetter
from newswatch.metrics import Metrics
from tests.support.kafka import read_topic
from tests.support.settings import kafka_settings


async def test_dead_letters_keep_bytes_and_count_after_ack(
    bootstrap: str, unique: str, metrics: Metrics
) -> None:
    kafka = kafka_settings(bootstrap)
    topic = f"dlq-{unique}"
    await create_topics(kafka, [topic])
    producer = make_producer(kafka)
    await producer.start()
    big = bytes(range(256)) * 4_000  # 1 MB, over the 512 KiB raw limit
    try:
        writer = DeadLetterWriter(producer, topic, "classify", metrics, max_raw_bytes=512 * 1024)
        letters = [
            writer.make("invalid_utf8", "byte 0", "posts", 1, 7, b"\xff\x00binary"),
            writer.make("too_large", "1024000 bytes", "posts", 0, 9, big),
        ]
        assert (
            metrics.registry.get_sample_value(
                "newswatch_stream_dead_lettered_total", {"stage": "classify", "reason": "too_large"}
            )
            is None
        )
        await writer.send(letters)
    finally:
        await producer.stop()
    records = await read_topic(bootstrap, topic, lambda rs: len(rs) >= 2)
    got = {r.key: DeadLetter.from_json(r.value) for r in records if r.value is not None}
    small, large = got[b"posts/1/7"], got[b"posts/0/9"]
    assert small.raw == b"\xff\x00binary" and small.reason == "invalid_utf8" and small.offset == 7
    assert large.raw == big[: 512 * 1024]
    assert f"sha256={hashlib.sha256(big).hexdigest()}" in large.detail and "1024000 bytes" in large.detail
    for reason in ("invalid_utf8", "too_large"):
        assert (
            metrics.registry.get_sample_value(
                "newswatch_stream_dead_lettered_total", {"stage": "classify", "reason": reason}
            )
            == 1.0
        )
