"""send_all's batch path: the partition producer.send would choose, per-partition order, and
records refused for good isolated (the client's size check, a batch the broker refuses)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError, RecordListTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from newswatch.io import produce
from newswatch.io.kafka import create_topics, make_producer
from newswatch.io.produce import OutRecord, Refused, murmur2, murmur2_many, partition_for, send_all
from newswatch.io.schemas import MAX_RECORD_BYTES
from newswatch.settings import KafkaSettings
from tests.support.kafka import read_topic
from tests.support.settings import kafka_settings


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_murmur2_is_the_kafka_clients_hash(key: bytes) -> None:
    assert murmur2(key) == reference_murmur2(key)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=3) | st.binary(min_size=18, max_size=19), max_size=200))
def test_murmur2_many_hashes_each_key_as_murmur2(keys: list[bytes]) -> None:
    """Keys of one length are hashed together (numpy) from 16 on: many of few lengths here."""
    assert murmur2_many(keys) == [reference_murmur2(k) for k in keys]


@given(st.binary(min_size=0, max_size=40), st.integers(1, 12))
def test_partition_for_is_the_default_partitioners_choice(key: bytes, n: int) -> None:
    parts = list(range(n))
    assert partition_for(key, parts) == DefaultPartitioner()(key, parts, parts)


def test_keyless_records_take_the_partitions_in_turn() -> None:
    got = Counter(partition_for(None, [0, 1, 2]) for _ in range(30))
    assert got == Counter({0: 10, 1: 10, 2: 10})


async def _producer(kafka: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    producer = make_producer(kafka, **overrides)
    await producer.start()
    return producer


async def test_batches_land_where_producer_send_puts_each_key_in_order(bootstrap: str, unique: str) -> None:
    kafka = kafka_settings(bootstrap, partitions=3)
    batched, single = f"batched-{unique}", f"single-{unique}"
    await create_topics(kafka, [batched, single], partitions=3)
    # 400 records of ~1 kB: several full batches per partition (16 kB each)
    records = [
        OutRecord(batched, b"%05d:" % i + b"v" * 1_000, f"key-{i % 97}".encode(), 1_700_000_000_000 + i)
        for i in range(400)
    ]
    producer = await _producer(kafka)
    try:
        assert await send_all(producer, records) == []
        expected = {}
        for rec in records[:97]:  # where producer.send puts each key
            meta = await (await producer.send(single, rec.value, key=rec.key))
            expected[rec.key] = meta.partition
    finally:
        await producer.stop()
    assert len(set(expected.values())) == 3, "the keys spread over every partition"
    got = await read_topic(bootstrap, batched, lambda rs: len(rs) >= len(records), 30)
    assert len(got) == len(records)
    for r in got:
        assert r.partition == expected[r.key], r.key
    by_value = {rec.value: rec for rec in records}
    for r in got:
        assert r.timestamp == by_value[r.value].timestamp_ms
    for p in range(3):  # each partition holds its records in the order given
        values = [r.value for r in sorted(got, key=lambda r: r.offset) if r.partition == p]
        assert values == [rec.value for rec in records if expected[rec.key] == p]


async def test_keyless_records_are_all_produced(bootstrap: str, unique: str) -> None:
    kafka = kafka_settings(bootstrap, partitions=2)
    topic = f"keyless-{unique}"
    await create_topics(kafka, [topic], partitions=2)
    producer = await _producer(kafka)
    try:
        assert await send_all(producer, [OutRecord(topic, b"r%d" % i) for i in range(50)]) == []
    finally:
        await producer.stop()
    got = await read_topic(bootstrap, topic, lambda rs: len(rs) >= 50, 30)
    assert sorted(r.value for r in got) == sorted(b"r%d" % i for i in range(50))
    assert {r.partition for r in got} == {0, 1}


async def test_the_client_size_check_refuses_like_producer_send(kafka: KafkaSettings, unique: str) -> None:
    topic = f"size-{unique}"
    await create_topics(kafka, [topic], partitions=1)
    producer = await _producer(kafka, max_request_size=2_000)
    try:
        big = OutRecord(topic, b"x" * 1_950, b"k")  # over the limit only with its framing
        records = [OutRecord(topic, b"small-1"), big, OutRecord(topic, b"y" * 1_800), OutRecord(topic, b"s2")]
        batched = await send_all(producer, records)
        each = await produce._send_each(producer, records)
        only_big = await send_all(producer, [big, big])  # nothing left to batch
    finally:
        await producer.stop()
    assert [r.record for r in only_big] == [big, big]
    assert [r.record for r in batched] == [big] == [r.record for r in each]
    assert batched[0].detail == each[0].detail and "MessageSizeTooLargeError" in batched[0].detail
    got = await read_topic(kafka.bootstrap_servers, topic, lambda rs: len(rs) >= 6, 10)
    assert [r.value for r in got] == [b"small-1", b"y" * 1_800, b"s2"] * 2


async def test_a_refused_batch_is_sent_again_record_by_record(
    kafka: KafkaSettings, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that refuses a batch holding a poison record: only the poison one is returned."""
    topic = f"poison-{unique}"
    await create_topics(kafka, [topic], partitions=1)
    producer = await _producer(kafka)
    real_create, real_batch, real_send = producer.create_batch, producer.send_batch, producer.send
    poisoned: set[int] = set()  # the batches holding the poison record
    refused_batches = 0

    def create_batch() -> Any:
        batch = real_create()
        append = batch.append

        def noting(*, timestamp: int | None, key: bytes | None, value: bytes) -> Any:
            meta = append(timestamp=timestamp, key=key, value=value)
            if meta is not None and value == b"poison":
                poisoned.add(id(batch))
            return meta

        batch.append = noting
        return batch

    async def send_batch(batch: Any, topic: str, *, partition: int) -> Any:
        nonlocal refused_batches
        if id(batch) in poisoned:
            refused_batches += 1
            future = asyncio.get_running_loop().create_future()
            future.set_exception(RecordListTooLargeError("refused batch"))
            return future
        return await real_batch(batch, topic, partition=partition)

    async def send(topic: str, value: bytes, **kw: Any) -> Any:
        if b"poison" in value:
            raise RecordListTooLargeError("refused alone")
        return await real_send(topic, value, **kw)

    monkeypatch.setattr(producer, "create_batch", create_batch)
    monkeypatch.setattr(producer, "send_batch", send_batch)
    monkeypatch.setattr(producer, "send", send)
    records = [OutRecord(topic, b"ok-%d" % i) for i in range(5)]
    poison = OutRecord(topic, b"poison")
    try:
        refused = await send_all(producer, [*records[:2], poison, *records[2:]])
    finally:
        await producer.stop()
    assert refused_batches == 1
    assert [r.record for r in refused] == [poison] and isinstance(refused[0], Refused)
    assert "RecordListTooLargeError" in refused[0].detail
    got = await read_topic(kafka.bootstrap_servers, topic, lambda rs: len(rs) >= 5, 10)
    assert sorted(r.value for r in got) == sorted(r.value for r in records)


async def test_a_kafka_failure_is_raised(
    kafka: KafkaSettings, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"fail-{unique}"
    await create_topics(kafka, [topic], partitions=1)
    producer = await _producer(kafka)

    async def send_batch(batch: Any, topic: str, *, partition: int) -> Any:
        future = asyncio.get_running_loop().create_future()
        future.set_exception(KafkaTimeoutError("no broker"))
        return future

    monkeypatch.setattr(producer, "send_batch", send_batch)
    try:
        with pytest.raises(KafkaTimeoutError):
            await send_all(producer, [OutRecord(topic, b"a"), OutRecord(topic, b"b")])
    finally:
        await producer.stop()


async def test_the_stages_producers_take_the_batch_path() -> None:
    producer = make_producer(KafkaSettings(broker_compat="tansu"))
    assert produce._batch_limit(producer) == MAX_RECORD_BYTES
    assert produce._batch_limit(make_producer(KafkaSettings())) == MAX_RECORD_BYTES


async def test_a_producer_the_batch_path_cannot_mirror_sends_record_by_record(
    kafka: KafkaSettings, unique: str
) -> None:
    topic = f"serial-{unique}"
    await create_topics(kafka, [topic], partitions=1)
    producer = await _producer(kafka, value_serializer=lambda v: v)
    try:
        assert produce._batch_limit(producer) is None
        assert await send_all(producer, [OutRecord(topic, b"a", b"k")]) == []
    finally:
        await producer.stop()
    got = await read_topic(kafka.bootstrap_servers, topic, lambda rs: len(rs) >= 1, 10)
    assert [r.value for r in got] == [b"a"]
