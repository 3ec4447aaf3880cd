"""The delivery stage: alerts topic → routed, grouped notifications → sinks.

At-least-once with idempotency: the alerts-topic offsets are committed only after every
alert of a batch was delivered to every routed sink or dead-lettered. Each acknowledged
(sink, idempotency key) pair is written to a compacted delivery-log topic before the
commit; a restarted notifier reads that log first and skips what was acknowledged, so
a crash between acknowledgement and commit does not re-send (see ``docs/alerts.md``).

Alerts of one cause (sharing posts, close in event time) form an incident
(:mod:`newswatch.alerts.incidents`): one notification when it fires, one when its last
member resolves. The open incidents are written to a compacted incident-log topic before
a batch is delivered and read back on start, so a restarted notifier plans the same
notifications (same ids, same delivery-log keys) for a batch it reads again.

Unreadable records and alerts no sink took go to the alerts dead-letter topic
(key ``topic/partition/offset``): an alert record that is not a valid
:class:`~newswatch.alerts.events.AlertEvent` as ``invalid_alert``, an incident-log record
read on start that is not an incident as ``invalid_incident`` (then tombstoned), an
incident record Kafka refuses (too large) as ``produce_failed``. When Kafka does not take
a delivery record, an incident record, a dead letter or the offset commit within
``kafka.request_timeout_ms``, the notifier stops with
:class:`~newswatch.alerts.exceptions.NotifyError` (exit code 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord

from newswatch.alerts.delivery import Outcome, deliver
from newswatch.alerts.events import AlertEvent
from newswatch.alerts.exceptions import NotifyError
from newswatch.alerts.incidents import IncidentBook, Page, Plan
from newswatch.alerts.routing import Router, group_notifications
from newswatch.alerts.sinks import Notification, Sink, build_sink
from newswatch.alerts.sinks.alertmanager import AlertmanagerSink
from newswatch.io.kafka import KafkaIOError, close_client, create_topics, make_consumer, make_producer
from newswatch.io.logtopic import read_to_end
from newswatch.io.produce import PRODUCE_FAILED, OutRecord, send_all
from newswatch.io.schemas import RecordError
from newswatch.io.stage import Stage
from newswatch.metrics import Metrics
from newswatch.settings import Settings
from newswatch.settings.alerts import NotifySettings, SinkSettings

__all__ = ["Notifier", "configured_sinks"]

log = logging.getLogger(__name__)
STAGE = "notify"


def configured_sinks(settings: NotifySettings) -> list[Sink]:
    """Every sink of ``settings`` (``sinks`` plus the ``webhook_urls`` shorthand), not started."""
    specs = list(settings.sinks)
    for i, url in enumerate(settings.webhook_urls):
        specs.append(
            SinkSettings(
                name=f"webhook-{i}",
                type="webhook",
                url=url,
                secret=settings.webhook_secret,
                allow_insecure=settings.webhook_allow_insecure,
            )
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        from newswatch.alerts.exceptions import SinkConfigError

        raise SinkConfigError(f"sink names must be unique, got {', '.join(names)}")
    return [build_sink(s, settings.timeout_s) for s in specs]


@dataclass(frozen=True, slots=True)
class _Item:
    record: ConsumerRecord[bytes, bytes] | None
    event: AlertEvent


class Notifier(Stage):
    """Consumes the alerts topic and delivers to the configured sinks.

    Parameters
    ----------
    settings
        The whole settings tree (``kafka``, ``topics`` and ``notify`` are used).
    metrics
        Deliveries, latencies and dead letters are counted here (a fresh registry if omitted).
    sinks
        Sinks to use instead of the configured ones (tests, ``alerts test``).
    rng
        The random source of the retry jitter.
    """

    name = STAGE
    error = NotifyError
    restart_note = "unacknowledged alerts are read again, acknowledged ones skipped"

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        sinks: list[Sink] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(settings, metrics)
        self.kafka = settings.kafka
        self.topics = settings.topics
        self.notify = notify = settings.notify
        self.sinks = {s.name: s for s in (sinks if sinks is not None else configured_sinks(notify))}
        self.router = Router(notify, list(self.sinks))
        self.delivered: set[str] = set()
        self._rng = rng or random.Random()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._log_reader: AIOKafkaConsumer | None = None
        self._pending: list[ConsumerRecord[bytes, bytes]] = []
        self._pending_since = 0.0
        self._pending_firing = False
        #: Open incidents (``None`` with ``notify.incidents`` off).
        self.incidents = (
            IncidentBook(notify.incident_gap_ms, notify.incident_max_members) if notify.incidents else None
        )
        self._settled: list[str] = []  # incidents to tombstone once their batch is committed

    async def start(self) -> None:
        """Create topics, start the Kafka clients and sinks, and load the delivery log.

        A second call raises ``RuntimeError``; an unreachable cluster :class:`KafkaIOError`.
        """
        self._claim_start()
        try:
            await self._start()
        except KafkaError as exc:
            await self.stop()
            raise KafkaIOError(
                f"notify cannot start on {self.kafka.bootstrap_servers}: {type(exc).__name__}: {exc}"
            ) from exc
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        ck = self.kafka.client_kwargs()
        logs = (self.notify.delivery_log_topic, self.notify.incident_log_topic)
        await create_topics(
            self.kafka,
            [self.topics.alerts, self.topics.alerts_dead_letter, *logs],
            compacted=logs,
        )
        self._producer = make_producer(self.kafka, client_id=f"{self.kafka.client_id}-notify")
        await self._producer.start()
        self._open_dead_letters(self._producer, self.topics.alerts_dead_letter)
        # The delivery-log reader stays open: before each flush it picks up acknowledgements written
        # since (by this notifier or by a replica that owned a partition before a rebalance).
        self._log_reader = AIOKafkaConsumer(
            **ck, enable_auto_commit=False, client_id=f"{self.kafka.client_id}-notify-log"
        )
        await self._log_reader.start()
        for key, _value in await read_to_end(self._log_reader, self.notify.delivery_log_topic):
            self.delivered.add(key.decode(errors="replace"))  # a foreign key matches no delivery
        log.info("delivery log: %d acknowledged deliveries", len(self.delivered))
        if self.incidents is not None:
            await self._load_incidents()
        for sink in self.sinks.values():
            await sink.start()
        self._resume_alertmanager_sinks()
        self._consumer = make_consumer(
            self.kafka,
            self.topics.alerts,
            group_id=self.notify.group_id,
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

    def _resume_alertmanager_sinks(self) -> None:
        """Alertmanager sinks re-send their active alerts: after a restart, those of the incident log
        that the delivery log shows they acknowledged firing and not resolved (docs/alerts.md)."""
        for sink in self.sinks.values():
            if isinstance(sink, AlertmanagerSink):
                held = sink.resume(
                    lambda key, s=sink.name: f"{s}|{key}" in self.delivered,
                    self.incidents,
                    self.router.group_of,
                )
                log.info("alertmanager sink %s: %d active alert(s) to re-send", sink.name, held)

    async def _load_incidents(self) -> None:
        """Read the incident log to its end; closed incidents in it are tombstoned after the next commit."""
        assert self.incidents is not None
        reader = AIOKafkaConsumer(
            **self.kafka.client_kwargs(),
            enable_auto_commit=False,
            client_id=f"{self.kafka.client_id}-notify-incidents",
        )
        await reader.start()
        topic = self.notify.incident_log_topic
        try:
            skipped = self.incidents.load(await read_to_end(reader, topic))
        finally:
            await close_client(reader, "notify incident-log reader")
        for key, value, exc in skipped:  # written by something else: dead-lettered, then tombstoned
            await self._send_letter((topic, -1, -1), value, "invalid_incident", f"{exc.reason}: {exc}")
            with contextlib.suppress(UnicodeDecodeError):  # else left in the log (dead-lettered again)
                self._settled.append(key.decode())
        self._settled.extend(self.incidents.closed_ids())
        log.info("incident log: %d incidents held", len(self.incidents.incidents))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and deliver until ``stop`` is set; raises :class:`NotifyError` when Kafka fails."""
        while not stop.is_set():
            await self.step()

    async def step(self, timeout_ms: int = 200) -> int:
        """One poll; flushes the gathered batch once ``group_wait_s`` has passed. Returns alerts handled.

        A batch holding a firing alert waits ``incident_wait_s`` instead, when that is longer.
        The delivery log is read on every poll, so an Alertmanager sink stops re-sending an alert
        whose resolve another notifier replica delivered.
        """
        assert self._consumer is not None, "Notifier not started"
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=500)
        await self._refresh_log()
        for records in batch.values():
            if records and not self._pending:
                self._pending_since = time.monotonic()
            self._pending.extend(records)
            self.metrics.consumed.labels(STAGE).inc(len(records))
            if self.incidents is not None and not self._pending_firing:
                self._pending_firing = any(_is_firing(r) for r in records)
        if not self._pending:
            return 0
        wait_s = self.notify.group_wait_s
        if self._pending_firing:  # let the related keys of a new incident arrive
            wait_s = max(wait_s, self.notify.incident_wait_s)
        if time.monotonic() - self._pending_since < wait_s and len(self._pending) < 1000:
            return 0
        return await self.drain()

    async def drain(self) -> int:
        """Deliver and commit everything gathered now, without waiting out the gathering period."""
        assert self._consumer is not None, "Notifier not started"
        if not self._pending:
            return 0
        pending, self._pending = self._pending, []
        self._pending_firing = False
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
            raise self.fail("the offset commit of the alerts read", exc) from exc
        else:
            await self._tombstone_settled()
        return len(pending)

    async def _tombstone_settled(self) -> None:
        """Delete closed (and stale) incidents from the log once the batch that closed them is committed."""
        if self.incidents is None or not self._settled:
            return
        assert self._producer is not None
        settled, self._settled = self._settled, []
        try:
            futures = [
                await self._producer.send(self.notify.incident_log_topic, None, key=i.encode())
                for i in settled
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise self.fail("the incident-log tombstones", exc) from exc
        for incident_id in settled:
            self.incidents.forget(incident_id)

    async def _refresh_log(self) -> None:
        if self._log_reader is None:
            return
        batch = await self._log_reader.getmany(timeout_ms=0)
        for recs in batch.values():
            self.delivered.update((r.key or b"").decode(errors="replace") for r in recs)

    async def _flush(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        assert self._producer is not None
        await self._refresh_log()
        items: dict[str, _Item] = {}
        for r in records:
            try:
                event = AlertEvent.from_json(r.value or b"")
            except (ValueError, TypeError, KeyError, RecursionError) as exc:  # RecordError, JSON, UTF-8
                why = exc.reason if isinstance(exc, RecordError) else type(exc).__name__
                await self._dead_letter(r, "invalid_alert", f"not an alert event: {why}: {str(exc)[:200]}")
                continue
            items[event.idempotency_key] = _Item(r, event)
        events = [i.event for i in items.values()]
        per_sink: dict[str, list[Notification]] = {}
        if self.incidents is not None:
            plan = self.incidents.observe(events)
            await self._record_incidents(plan)
            events = plan.loose
            for page in plan.pages:
                self._add_page(page, items, per_sink)
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
                outcome = await deliver(sink, note, self.notify, self.metrics, self._rng)
                if outcome.ok:
                    await self._acknowledge(sink, note)
                    continue
                for a in note.alerts:
                    item = items.get(a.idempotency_key) or _Item(None, a)
                    await self._dead_letter(item, _reason(outcome), _detail(sink, outcome))
                self.metrics.deliveries.labels(sink.name, "dead_letter").inc()

        await asyncio.gather(*(run_sink(self.sinks[name], notes) for name, notes in per_sink.items()))

    def _add_page(self, page: Page, items: dict[str, _Item], per_sink: dict[str, list[Notification]]) -> None:
        """Route an incident page to every sink one of its alerts is routed to, unless acknowledged there."""
        groups = {a.fingerprint: self.router.group_of(a) for a in page.alerts}
        note = Notification(alerts=page.alerts, group="incident", incident=page.summary(groups))
        sinks: list[str] = []
        for a in page.alerts:
            items.setdefault(a.idempotency_key, _Item(None, a))  # members read in earlier batches
            sinks.extend(s for s in self.router.sinks_for(a) if s not in sinks)
        for sink_name in sinks:
            if all(f"{sink_name}|{a.idempotency_key}" in self.delivered for a in page.alerts):
                self.metrics.deliveries.labels(sink_name, "duplicate").inc()
                continue
            per_sink.setdefault(sink_name, []).append(note)

    async def _record_incidents(self, plan: Plan) -> None:
        """Write the incidents a batch changed to the incident log (before anything is delivered)."""
        assert self._producer is not None and self.incidents is not None
        topic = self.notify.incident_log_topic
        records = [OutRecord(topic, inc.to_record(), inc.id.encode()) for inc in plan.changed]
        try:
            refused = await send_all(self._producer, records)
        except KafkaError as exc:
            raise self.fail("the incident-log records", exc) from exc
        for r in refused:
            # Delivered all the same; a restart re-reading this batch plans it without the incident.
            await self._send_letter((topic, -1, -1), r.record.value, PRODUCE_FAILED, r.detail)
        self._settled.extend(inc.id for inc in plan.changed if inc.closed)
        self._settled.extend(i for i in plan.dropped if i not in self._settled)
        if plan.absorbed:
            log.info("%d alert transition(s) joined incidents already notified", len(plan.absorbed))

    async def _acknowledge(self, sink: Sink, note: Notification) -> None:
        assert self._producer is not None
        value = json.dumps({"notification": note.id, "at_ms": int(time.time() * 1000)}).encode()
        keys = [f"{sink.name}|{a.idempotency_key}" for a in note.alerts]
        try:
            futures = [
                await self._producer.send(self.notify.delivery_log_topic, value, key=key.encode())
                for key in keys
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise self.fail(f"the delivery record of {note.id}", exc) from exc
        self.delivered.update(keys)

    async def _dead_letter(self, r: ConsumerRecord[bytes, bytes] | _Item, reason: str, detail: str) -> None:
        """Dead-letter a record, or an alert of an incident read in an earlier batch (offset -1).

        Any Kafka failure here stops the notifier (:meth:`~Stage.fail`): going on would either
        hold this batch's offsets forever or commit past an alert that is neither delivered nor
        dead-lettered; the restart re-reads the batch and skips what the delivery log shows.
        """
        if isinstance(r, _Item) and r.record is not None:
            r = r.record
        if isinstance(r, _Item):
            where = (self.topics.alerts, -1, -1)
            raw = r.event.to_json()
        else:
            where = (r.topic, r.partition, r.offset)
            raw = r.value or b""
        await self._send_letter(where, raw, reason, detail)

    async def _send_letter(self, where: tuple[str, int, int], raw: bytes, reason: str, detail: str) -> None:
        assert self.dead_letters is not None
        letter = self.dead_letters.make(reason, detail, *where, raw)
        try:
            await self.dead_letters.send([letter])
        except KafkaError as exc:
            raise self.fail(f"a dead letter to {self.dead_letters.topic}", exc) from exc
        log.error("record at %s[%d]@%d dead-lettered: %s", *where, detail)


def _is_firing(r: ConsumerRecord[bytes, bytes]) -> bool:
    try:
        return bool(json.loads(r.value or b"").get("status") == "firing")
    except (ValueError, AttributeError, RecursionError):
        return False


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
