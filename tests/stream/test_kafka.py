"""Kafka helpers against the real embedded broker."""

from __future__ import annotations

import time

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from newswatch.demo.broker import free_port
from newswatch.io.kafka import (
    KafkaIOError,
    create_topics,
    make_consumer,
    make_producer,
    partition_lag,
    publish,
)
from newswatch.settings import KafkaSettings
from tests.support.settings import kafka_settings


def _kafka(bootstrap: str, partitions: int = 2) -> KafkaSettings:
    return kafka_settings(bootstrap, partitions)


async def test_create_topics_uses_one_partition_count_and_is_idempotent(bootstrap: str, unique: str) -> None:
    kafka = _kafka(bootstrap, partitions=3)
    names = [f"t1-{unique}", f"t2-{unique}"]
    assert sorted(await create_topics(kafka, names)) == sorted(names)
    assert await create_topics(kafka, names) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    assert {d["topic"]: len(d["partitions"]) for d in described} == {n: 3 for n in names}


async def test_unreachable_cluster_is_a_clear_error() -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=1_000)
    with pytest.raises(KafkaIOError, match="cannot reach Kafka"):
        await create_topics(kafka, ["x"])


async def test_lag_from_fetch_high_water_marks_across_batches(bootstrap: str, unique: str) -> None:
    """Lag must count every record even when the log holds many batches (Tansu's ListOffsets does not)."""
    kafka = _kafka(bootstrap, partitions=1)
    topic = f"lag-{unique}"
    await create_topics(kafka, [topic])
    producer = make_producer(kafka)
    await producer.start()
    try:
        now = int(time.time() * 1000)
        for batch in range(5):  # five separate batches of 20
            await publish(producer, topic, [(None, f"{batch}-{i}".encode(), now) for i in range(20)])
    finally:
        await producer.stop()
    consumer = make_consumer(kafka, topic, group_id=f"g-{unique}", max_poll_records=30)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        got: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(got) < 30 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=30 - len(got))
            got += [r.value for rs in batch.values() for r in rs if r.value is not None]
        assert len(got) == 30
        assert consumer.highwater(tp) == 100
        assert (await partition_lag(consumer))[tp] == 70
        await consumer.commit({tp: 30})
    finally:
        await consumer.stop()
    # a new member of the same group resumes at the committed offset
    consumer = make_consumer(kafka, topic, group_id=f"g-{unique}")
    await consumer.start()
    try:
        first = None
        deadline = time.monotonic() + 20
        while first is None and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=1)
            for rs in batch.values():
                first = rs[0]
        assert first is not None and first.offset == 30 and first.value == b"1-10"
    finally:
        await consumer.stop()


async def test_compacted_topics_are_single_partition_and_compacted(bootstrap: str, unique: str) -> None:
    kafka = kafka_settings(bootstrap, partitions=3)
    log, data = f"log-{unique}", f"data-{unique}"
    created = await create_topics(kafka, [data, log], compacted=[log])
    assert sorted(created) == sorted([data, log])
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics([data, log])}
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, log)])
    finally:
        await admin.close()
    assert described == {data: 3, log: 1}
    entries = {c[0]: c[1] for c in configs[0].resources[0][4]}
    assert entries.get("cleanup.policy") == "compact"
