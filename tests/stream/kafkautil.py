"""Helpers for the stream tests: read a whole topic from the real broker without a group."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from newswatch.settings import KafkaSettings, Settings, TopicSettings
from newswatch.settings.stream import ClassifySettings


def kafka_settings(bootstrap: str, partitions: int = 2) -> KafkaSettings:
    """Kafka settings for tests: short group timeouts so the embedded broker forms groups in ~1 s."""
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        partitions=partitions,
        session_timeout_ms=2_000,
        heartbeat_interval_ms=300,
        broker_compat="tansu",
    )


async def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    timeout_s: float = 30.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning, read until ``until(records)`` or the deadline."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        parts = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout_s
        while not parts and time.monotonic() < deadline:
            await consumer.force_metadata_update()  # type: ignore[no-untyped-call]
            parts = consumer.partitions_for_topic(topic)
        assert parts, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while time.monotonic() < deadline and not until(records):
            batch = await consumer.getmany(timeout_ms=200)
            for rs in batch.values():
                records.extend(rs)
    finally:
        await consumer.stop()
    return records


def stage_env(
    settings: Settings, sections: tuple[str, ...] = ("kafka", "topics", "classify"), **extra: str
) -> dict[str, str]:
    """The environment of a stage subprocess configured exactly like ``settings``.

    Every option of ``sections`` becomes ``NEWSWATCH_<SECTION>_<OPTION>`` (JSON for lists and
    numbers); the parent's own ``NEWSWATCH_*`` variables are dropped so they cannot leak in.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
    for section, values in settings.model_dump(mode="json", include=set(sections)).items():
        for option, value in values.items():
            if value is not None:
                name = f"NEWSWATCH_{section.upper()}_{option.upper()}"
                env[name] = value if isinstance(value, str) else json.dumps(value)
    env.update(extra)
    return env


def settings_for(bootstrap: str, unique: str, partitions: int = 2, **classify: object) -> Settings:
    """Settings of one test: its own topics and group, fast group joins."""
    topics = TopicSettings(
        posts=f"posts-{unique}",
        scored=f"scored-{unique}",
        windows=f"windows-{unique}",
        alerts=f"alerts-{unique}",
        dead_letter=f"dlq-{unique}",
        alerts_dead_letter=f"alerts-dlq-{unique}",
    )
    cfg = ClassifySettings(group_id=f"classify-{unique}", **classify)
    return Settings(kafka=kafka_settings(bootstrap, partitions=partitions), topics=topics, classify=cfg)
