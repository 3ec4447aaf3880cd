"""The embedded broker: a real Kafka-protocol server on loopback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from newswatch.demo.broker import BrokerError, EmbeddedBroker


def test_start_listens_and_stop_releases_the_port() -> None:
    broker = EmbeddedBroker()
    assert broker.pid is None
    broker.start()
    try:
        assert broker.running
        assert broker.pid is not None and Path(f"/proc/{broker.pid}").exists()
        with socket.create_connection((broker.host, broker.port), timeout=1):
            pass
        with pytest.raises(BrokerError, match="already started"):
            broker.start()
    finally:
        broker.stop()
    assert not broker.running and broker.pid is None
    broker.stop()  # idempotent
    with pytest.raises(OSError), socket.create_connection((broker.host, broker.port), timeout=0.5):
        pass


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEWSWATCH_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    with pytest.raises((BrokerError, OSError)):
        EmbeddedBroker(start_timeout_s=2).start()


async def test_round_trip_over_the_kafka_protocol(bootstrap: str, unique: str) -> None:
    topic = f"roundtrip-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(50):
            await producer.send_and_wait(topic, f"m{i}".encode(), partition=i % 2)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    seen: set[bytes] = set()
    try:
        while len(seen) < 50:
            batch = await consumer.getmany(timeout_ms=2000)
            assert batch, "no records within 2 s"
            for records in batch.values():
                seen.update(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    assert seen == {f"m{i}".encode() for i in range(50)}


async def test_advertised_host_is_what_clients_are_told() -> None:
    with EmbeddedBroker(host="0.0.0.0", advertised_host="127.0.0.1") as broker:
        assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        try:
            meta = await admin.describe_cluster()
        finally:
            await admin.close()
    assert [(b["host"], b["port"]) for b in meta["brokers"]] == [("127.0.0.1", broker.port)]
