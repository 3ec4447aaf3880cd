"""`newswatch broker --storage s3://…` keeps records and committed offsets across a restart.

A real S3 endpoint on loopback (``moto_server``) holds the broker's storage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from aiokafka import TopicPartition

from newswatch.demo.broker import free_port
from newswatch.io.kafka import make_consumer, make_producer, partition_lag, publish
from newswatch.settings import TopicSettings
from tests.support.kafka import MOTO, moto_s3
from tests.support.settings import kafka_settings


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, with an empty bucket ``newswatch``."""
    with moto_s3(MOTO, "newswatch") as env:
        yield env["AWS_ENDPOINT"]


def _start_broker(port: int, endpoint: str) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "AWS_ENDPOINT": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
        "NEWSWATCH_KAFKA_PARTITIONS": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newswatch.cli.main",
            "broker",
            "--port",
            str(port),
            "--storage",
            "s3://newswatch/",
            "--create-topics",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(60)
    return proc, (line[0].strip() if line else "")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.fault
async def test_s3_storage_survives_a_broker_restart(s3_endpoint: str) -> None:
    port = free_port()
    topic = TopicSettings().posts
    tp = TopicPartition(topic, 0)
    proc, bootstrap = _start_broker(port, s3_endpoint)
    try:
        assert bootstrap == f"127.0.0.1:{port}", (
            proc.stderr.read() if proc.stderr and proc.poll() else bootstrap
        )
        kafka = kafka_settings(bootstrap, partitions=1)
        producer = make_producer(kafka)
        await producer.start()
        try:
            for i in range(50):  # separate sends: many batches in the log
                await publish(producer, topic, [(f"k{i}".encode(), f"v{i}".encode(), None)])
        finally:
            await producer.stop()
        consumer = make_consumer(kafka, topic, group_id="s3-group")
        await consumer.start()
        try:
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(got) < 20 and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=300, max_records=20 - len(got))
                got += [r.value for rs in batch.values() for r in rs if r.value is not None]
            assert got == [f"v{i}".encode() for i in range(20)]
            await consumer.commit({tp: 20})
        finally:
            await consumer.stop()
    finally:
        _stop(proc)

    proc, bootstrap = _start_broker(port, s3_endpoint)
    try:
        assert bootstrap == f"127.0.0.1:{port}"
        consumer = make_consumer(kafka_settings(bootstrap, partitions=1), topic, group_id="s3-group")
        await consumer.start()
        try:
            rest: list[bytes] = []
            deadline = time.monotonic() + 30
            for target in (10, 30):
                while len(rest) < target and time.monotonic() < deadline:
                    batch = await consumer.getmany(timeout_ms=300, max_records=target - len(rest))
                    rest += [r.value for rs in batch.values() for r in rs if r.value is not None]
                if target == 10:
                    # position 30, fetch high-water mark 50: lag is right on s3:// too
                    assert (await partition_lag(consumer))[tp] == 20
            assert rest == [f"v{i}".encode() for i in range(20, 50)]
        finally:
            await consumer.stop()
    finally:
        _stop(proc)
