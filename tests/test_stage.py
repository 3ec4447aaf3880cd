"""One way to be a stage: the Stage base, its failure, its runner, and the broker quirks switch."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import ConsumerRecord

from newswatch.alerts.exceptions import DetectError, NotifyError
from newswatch.alerts.notify import Notifier
from newswatch.alerts.stage import DetectStage
from newswatch.errors import ConfigError
from newswatch.io.broker_compat import producer_options
from newswatch.io.schemas import DeadLetter
from newswatch.io.stage import Stage, StageError, run_until_signal
from newswatch.metrics import Metrics
from newswatch.settings import KafkaSettings, Settings, TopicSettings
from newswatch.settings.alerts import AlertSettings
from newswatch.stream.aggregate import AggregateError
from newswatch.stream.classify import ClassifyError


class _Probe(Stage):
    """The smallest stage: holds a flag between start and stop; ``run`` can be told to fail."""

    name = "probe"

    def __init__(self, settings: Settings, metrics: Metrics | None = None, *, fail: bool = False) -> None:
        super().__init__(settings, metrics)
        self.open = False
        self.should_fail = fail

    async def start(self) -> None:
        self._claim_start()
        self.open = True

    async def stop(self) -> None:
        self.open = False

    def _holds_resources(self) -> bool:
        return self.open

    async def run(self, stop: asyncio.Event) -> None:
        if self.should_fail:
            raise self.fail("the probe record", KafkaTimeoutError())
        await stop.wait()


def _settings(bootstrap: str = "127.0.0.1:9", unique: str = "x") -> Settings:
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            broker_compat="tansu",
            partitions=1,
            session_timeout_ms=6_000,
            heartbeat_interval_ms=1_000,
        ),
        topics=TopicSettings(
            windows=f"windows-{unique}",
            alerts=f"alerts-{unique}",
            dead_letter=f"dlq-{unique}",
            alerts_dead_letter=f"alerts-dlq-{unique}",
        ),
        alerts=AlertSettings(signals=("volume",), group_id=f"detect-{unique}"),
    )


def test_every_stage_error_is_a_retriable_stage_error_with_exit_code_2() -> None:
    for error in (ClassifyError, AggregateError, DetectError, NotifyError):
        assert issubclass(error, StageError)
        assert error.retriable and error.exit_code == 2


async def test_a_stage_starts_once() -> None:
    async with _Probe(_settings()) as probe:
        with pytest.raises(RuntimeError, match="started already"):
            await probe.start()
    with pytest.raises(RuntimeError, match="started already"):
        await probe.start()  # stopped: create a new one instead


def test_fail_returns_the_stages_error_and_keeps_the_first() -> None:
    probe = _Probe(_settings("kafka-1:9092"))
    assert probe.alive and probe.failure is None
    error = probe.fail("3 window records to windows-x", KafkaTimeoutError())
    assert isinstance(error, StageError) and error.exit_code == 2
    assert str(error).startswith("Kafka at kafka-1:9092 did not take 3 window records to windows-x within")
    assert "request_timeout_ms=30000" in str(error)
    assert probe.fail("something later", KafkaTimeoutError()) is error
    assert probe.failure is error and not probe.alive and not probe.ready


async def test_the_runner_raises_the_stages_failure_and_stops_it() -> None:
    probe = _Probe(_settings(), Metrics(), fail=True)
    with pytest.raises(StageError, match="did not take the probe record"):
        await run_until_signal(probe, host="127.0.0.1", port=0)
    assert not probe.open, "the stage was stopped"


async def test_the_runner_reports_a_taken_port_as_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="NEWSWATCH_METRICS_PORT"):
            await run_until_signal(_Probe(_settings()), host="127.0.0.1", port=port)


def test_idempotent_producers_except_on_the_embedded_broker() -> None:
    assert producer_options(KafkaSettings()) == {"enable_idempotence": True}
    assert producer_options(KafkaSettings(broker_compat="tansu")) == {"enable_idempotence": False}


def test_every_stage_takes_settings_and_metrics() -> None:
    settings, metrics = _settings(), Metrics()
    for stage in (DetectStage(settings, metrics), Notifier(settings, metrics, sinks=[])):
        assert stage.settings is settings and stage.metrics is metrics


async def test_detect_dead_letters_go_through_the_shared_writer(bootstrap: str, unique: str) -> None:
    """Key ``topic/partition/offset`` (docs/stream.md), stage ``detect``, the exact bytes."""
    settings = _settings(bootstrap, unique)
    metrics = Metrics()
    async with DetectStage(settings, metrics) as stage:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(settings.topics.windows, b"{not json", key=b"bad")
        finally:
            await producer.stop()
        deadline = time.monotonic() + 30
        labels = {"stage": "detect", "reason": "invalid_window"}
        while not metrics.registry.get_sample_value("newswatch_stream_dead_lettered_total", labels):
            assert time.monotonic() < deadline, "nothing dead-lettered"
            await stage.step(timeout_ms=200)
    consumer = AIOKafkaConsumer(
        settings.topics.dead_letter, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 20
        while not records and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(recs)
    finally:
        await consumer.stop()
    [record] = records
    letter = DeadLetter.from_json(record.value or b"")
    assert record.key == f"{settings.topics.windows}/0/0".encode()
    assert (letter.stage, letter.reason, letter.raw) == ("detect", "invalid_window", b"{not json")
