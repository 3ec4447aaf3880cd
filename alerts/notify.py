"""The delivery stage: alerts topic → routed, grouped notifications → sinks.

At-least-once with idempotency: the alerts-topic offsets are committed only after every
alert of a batch was delivered to every routed sink or dead-lettered. Each acknowledged
(sink, idempotency key) pair is written to a compacted delivery-log topic before the
commit; a restarted notifier reads that log first and skips what was acknowledged, so
a crash between acknowledgement and commit does not re-send (see ``docs/alerts.md``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord

from newswatch.alerts._kafka import read_to_end
from newswatch.alerts.delivery import Outcome, deliver
from newswatch.alerts.events import AlertEvent
from newswatch.alerts.exceptions import NotifyError
from newswatch.alerts.routing import Router, group_notifications
from newswatch.alerts.settings import NotifySettings, SinkSettings
from newswatch.alerts.sinks import Notification, Sink, build_sink
from newswatch.lifecycle import Service
from newswatch.metrics import Metrics
from newswatch.settings import KafkaSettings, TopicSettings
from newswatch.stream.kafka import close_client, create_topics, make_consumer, make_producer
from newswatch.stream.schemas import DeadLetter

__all__ = ["Notifier", "configured_sinks"]

log = logging.getLogger(__name__)
STAGE = "notify"


def configured_sinks(settings: NotifySettings) -> list[Sink]:
    """Every sink of ``settings`` (``sinks`` plus the ``webhook_urls`` shorthand), not started."""
    specs = list(settings.sinks)
    for i, url in enumerate(settings.webhook_urls):
        specs.append(
            SinkSettings(name=f"webhook-{i}", type="webhook", url=url, secret=settings.webhook_secret)
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        from newswatch.alerts.exceptions import SinkConfigError

        raise SinkConfigError(f"sink names must be unique, got {', '.join(names)}")
    return [build_sink(s, settings.timeout_s) for s in specs]


@dataclass(frozen=True, slots=True)
class _Item:
    record: ConsumerRecord[bytes, bytes]
    event: AlertEvent


class Notifier(Service):
    """Consumes the alerts topic and delivers to the configured sinks.

    Parameters
    ----------
    kafka, topics, settings
        Settings sections ``kafka``, ``topics`` and ``notify``.
    metrics
        Deliveries, latencies and dead letters are counted here.
    sinks
        Sinks to use instead of the configured ones (tests, ``alerts test``).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        settings: NotifySettings,
        metrics: Metrics | None = None,
        sinks: list[Sink] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.kafka = kafka
        self.topics = topics
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.sinks = {s.name: s for s in (sinks if sinks is not None else configured_sinks(settings))}
        self.router = Router(settings, list(self.sinks))
        self.delivered: set[str] = set()
        self._rng = rng or random.Random()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._log_reader: AIOKafkaConsumer | None = None
        self._pending: list[ConsumerRecord[bytes, bytes]] = []
        self._pending_since = 0.0
        self._started = False

    async def start(self) -> None:
        """Create topics, start the Kafka clients and sinks, and load the delivery log."""
        assert not self._started, "Notifier.start() called twice"
        self._started = True
        ck = self.kafka.client_kwargs()
        await create_topics(
            self.kafka,
            [self.topics.alerts, self.topics.alerts_dead_letter, self.settings.delivery_log_topic],
            compacted=(self.settings.delivery_log_topic,),
        )
        self._producer = make_producer(self.kafka, client_id=f"{self.kafka.client_id}-notify")
        await self._producer.start()
        # The delivery-log reader stays open: before each flush it picks up acknowledgements written
        # since (by this notifier or by a replica that owned a partition before a rebalance).
        self._log_reader = AIOKafkaConsumer(
            **ck, enable_auto_commit=False, client_id=f"{self.kafka.client_id}-notify-log"
        )
        await self._log_reader.start()
        for key, _value in await read_to_end(self._log_reader, self.settings.delivery_log_topic):
            self.delivered.add(key.decode())
        log.info("delivery log: %d acknowledged deliveries", len(self.delivered))
        for sink in self.sinks.values():
            await sink.start()
        self._consumer = make_consumer(
            self.kafka,
            self.topics.alerts,
            group_id=self.settings.group_id,
            client_id=f"{self.kafka.client_id}-notify",
        )
        await self._consumer.start()

    async def stop(self) -> None:
        """Stop clients and sinks; uncommitted alerts are delivered by the next notifier. Idempotent."""
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        reader, self._log_reader = self._log_reader, None
        if consumer is not None:
            await close_client(consumer, "notify consumer")
        if reader is not None:
            await close_client(reader, "notify delivery-log reader")
        if producer is not None:
            await close_client(producer, "notify producer")
        for sink in self.sinks.values():
            await sink.stop()
        self._pending = []

    def _holds_resources(self) -> bool:
        return self._consumer is not None

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll and deliver until ``stop`` is set."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            await self.step()

    async def step(self, timeout_ms: int = 200) -> int:
        """One poll; flushes the gathered batch once ``group_wait_s`` has passed. Returns alerts handled."""
        assert self._consumer is not None, "Notifier not started"
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=500)
        for records in batch.values():
            if records and not self._pending:
                self._pending_since = time.monotonic()
            self._pending.extend(records)
            self.metrics.consumed.labels(STAGE).inc(len(records))
        if not self._pending:
            return 0
        if time.monotonic() - self._pending_since < self.settings.group_wait_s and len(self._pending) < 1000:
            return 0
        pending, self._pending = self._pending, []
        await self._flush(pending)
        offsets: dict[TopicPartition, int] = {}
        for r in pending:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance moved the partitions: the new owner reads these alerts again and skips
            # what the delivery log shows acknowledged.
            log.warning(
                "offset commit failed after a rebalance (%s); alerts will be re-read", type(exc).__name__
            )
        except KafkaError as exc:  # every delivery is recorded: a restart re-reads and skips them
            raise self._kafka_failed("the offset commit of the alerts read", exc) from exc
        return len(pending)

    async def _refresh_log(self) -> None:
        if self._log_reader is None:
            return
        batch = await self._log_reader.getmany(timeout_ms=0)
        for recs in batch.values():
            self.delivered.update((r.key or b"").decode() for r in recs)

    async def _flush(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        assert self._producer is not None
        await self._refresh_log()
        items: dict[str, _Item] = {}
        for r in records:
            try:
                event = AlertEvent.from_json(r.value or b"")
            except (ValueError, TypeError, KeyError) as exc:
                await self._dead_letter(r, "invalid_alert", f"{type(exc).__name__}: not an alert event")
                continue
            items[event.idempotency_key] = _Item(r, event)
        events = [i.event for i in items.values()]
        per_sink: dict[str, list[Notification]] = {}
        for sink_name, notes in group_notifications(self.router, events).items():
            for note in notes:
                todo = tuple(
                    a for a in note.alerts if f"{sink_name}|{a.idempotency_key}" not in self.delivered
                )
                if not todo:
                    self.metrics.deliveries.labels(sink_name, "duplicate").inc()
                    continue
                per_sink.setdefault(sink_name, []).append(Notification(alerts=todo, group=note.group))

        async def run_sink(sink: Sink, notes: list[Notification]) -> None:
            # One sink's notifications go in transition order (a firing before its resolve, which
            # PagerDuty and Alertmanager need); different sinks are delivered concurrently.
            for note in sorted(notes, key=_transition_order):
                outcome = await deliver(sink, note, self.settings, self.metrics, self._rng)
                if outcome.ok:
                    await self._acknowledge(sink, note)
                    continue
                for a in note.alerts:
                    await self._dead_letter(
                        items[a.idempotency_key].record, _reason(outcome), _detail(sink, outcome)
                    )
                self.metrics.deliveries.labels(sink.name, "dead_letter").inc()

        await asyncio.gather(*(run_sink(self.sinks[name], notes) for name, notes in per_sink.items()))

    async def _acknowledge(self, sink: Sink, note: Notification) -> None:
        assert self._producer is not None
        value = json.dumps({"notification": note.id, "at_ms": int(time.time() * 1000)}).encode()
        keys = [f"{sink.name}|{a.idempotency_key}" for a in note.alerts]
        try:
            futures = [
                await self._producer.send(self.settings.delivery_log_topic, value, key=key.encode())
                for key in keys
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise self._kafka_failed(f"the delivery record of {note.id}", exc) from exc
        self.delivered.update(keys)

    async def _dead_letter(self, r: ConsumerRecord[bytes, bytes], reason: str, detail: str) -> None:
        assert self._producer is not None
        dl = DeadLetter(
            stage=STAGE,
            reason=reason,
            detail=detail,
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            raw=r.value or b"",
            at_ms=int(time.time() * 1000),
        )
        try:
            await self._producer.send_and_wait(self.topics.alerts_dead_letter, dl.to_json(), key=r.key)
        except KafkaError as exc:
            raise self._kafka_failed(f"a dead letter to {self.topics.alerts_dead_letter}", exc) from exc
        self.metrics.dead_lettered.labels(STAGE, reason).inc()
        log.error("alert at %s[%d]@%d dead-lettered: %s", r.topic, r.partition, r.offset, detail)

    def _kafka_failed(self, what: str, exc: KafkaError) -> NotifyError:
        """The error that stops the notifier: aiokafka retried ``what`` for ``request_timeout_ms``.

        Going on would either hold this batch's offsets forever or commit past an alert whose
        delivery is not recorded, so the process exits (non-zero) and its restart re-reads the
        batch from the committed offsets, skipping what the delivery log shows acknowledged.
        """
        error = NotifyError(
            f"Kafka at {self.kafka.bootstrap_servers} did not take {what} within "
            f"request_timeout_ms={self.kafka.request_timeout_ms} ({type(exc).__name__}); stopping so "
            "the notifier is restarted (unacknowledged alerts are read again, acknowledged ones skipped)"
        )
        log.error("notify: %s", error)
        return error


def _transition_order(note: Notification) -> tuple[int, int]:
    first = min(note.alerts, key=lambda a: (a.end_ms, a.status == "resolved"))
    return first.end_ms, int(first.status == "resolved")


def _reason(outcome: Outcome) -> str:
    return (
        "delivery_failed"
        if outcome.status is None or outcome.status >= 500 or outcome.status == 429
        else "rejected"
    )


def _detail(sink: Sink, outcome: Outcome) -> str:
    return f"sink {sink.name}: {outcome.error} ({outcome.attempts} attempts)"
