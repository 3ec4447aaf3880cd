"""The detection stage (``newswatch alerts run``): windows topic → engine → alerts topic.

Each batch of window records is scored; resulting alert events are produced (keyed by
fingerprint, so one alert's transitions stay ordered) and acknowledged by the broker
before the windows offsets are committed. Unreadable records go to the dead-letter
topic as ``invalid_window`` with the schema's reason in the detail (key
``topic/partition/offset``), and so does a record the detectors fail on; an alert event
Kafka refuses (too large, rejected) is dead-lettered as ``produce_failed`` with the bytes of
the event (at the coordinates of the window record it came from). Detector state lives in memory;
on start the stage replays the windows of the last ``alerts.replay_s`` seconds.

When Kafka does not take the alert events, a dead letter or the offset commit within
``kafka.request_timeout_ms``, the stage stops with :class:`DetectError` (exit code 2)
without committing past the failure; restarted, it reads the batch again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord

from newswatch.alerts.engine import AlertEngine
from newswatch.alerts.events import AlertEvent
from newswatch.alerts.exceptions import DetectError
from newswatch.io.broker_compat import refresh_metadata
from newswatch.io.kafka import KafkaIOError, close_client, create_topics, make_consumer, make_producer
from newswatch.io.produce import PRODUCE_FAILED, OutRecord, send_all
from newswatch.io.schemas import RecordError, WindowStat
from newswatch.io.stage import Stage
from newswatch.metrics import Metrics
from newswatch.settings import Settings

__all__ = ["DetectStage"]

log = logging.getLogger(__name__)
STAGE = "detect"


class DetectStage(Stage):
    """Consumes window statistics, produces alert events.

    Parameters
    ----------
    settings
        The whole settings tree (``kafka``, ``topics``, ``alerts`` are used).
    metrics
        Where the stage and its engine count (a fresh registry if omitted).
    """

    name = STAGE
    error = DetectError
    restart_note = "the windows are read again from the committed offset, detectors replayed"

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        super().__init__(settings, metrics)
        self.kafka = settings.kafka
        self.topics = settings.topics
        self.alerts = settings.alerts
        self.engine = AlertEngine(settings.alerts, self.metrics)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Create the topics, start the Kafka clients, replay; a second call raises ``RuntimeError``."""
        self._claim_start()
        await create_topics(self.kafka, [self.topics.windows, self.topics.alerts, self.topics.dead_letter])
        self._producer = make_producer(self.kafka, client_id=f"{self.kafka.client_id}-detect")
        try:
            await self._producer.start()
            self._open_dead_letters(self._producer, self.topics.dead_letter)
            if self.alerts.replay_s > 0:
                await self._replay()
            consumer = make_consumer(
                self.kafka,
                self.topics.windows,
                group_id=self.alerts.group_id,
                client_id=f"{self.kafka.client_id}-detect",
            )
            await consumer.start()
            self._consumer = consumer
        except (KafkaError, OSError) as exc:
            await self.stop()
            raise KafkaIOError(
                f"detect cannot start on {self.kafka.bootstrap_servers}: {type(exc).__name__}: {exc}"
            ) from exc
        except BaseException:
            await self.stop()
            raise

    async def _replay(self) -> None:
        """Feed the engine the recent windows this group already processed, discarding events.

        Detector baselines and alert state (a firing alert that must still resolve) come back
        as they were; the live consumer then continues from the committed offsets. Where the
        broker answers offsets-for-times imprecisely (the embedded broker), more is read.
        """
        reader = AIOKafkaConsumer(
            **self.kafka.client_kwargs(),
            group_id=self.alerts.group_id,
            client_id=f"{self.kafka.client_id}-detect-replay",
            enable_auto_commit=False,
        )
        await reader.start()
        t0 = time.monotonic()
        replayed = 0
        try:
            parts = reader.partitions_for_topic(self.topics.windows)
            if not parts:
                await refresh_metadata(reader)
                parts = reader.partitions_for_topic(self.topics.windows) or set()
            tps = [TopicPartition(self.topics.windows, p) for p in sorted(parts)]
            if not tps:
                return
            reader.assign(tps)
            ends = {tp: (await reader.committed(tp)) or 0 for tp in tps}
            todo = [tp for tp in tps if ends[tp] > 0]
            if not todo:
                return
            since_ms = int(time.time() * 1000 - self.alerts.replay_s * 1000)
            starts = await reader.offsets_for_times({tp: since_ms for tp in todo})
            for tp in todo:
                found = starts.get(tp)
                reader.seek(tp, min(found.offset, ends[tp]) if found is not None else ends[tp])
            deadline = time.monotonic() + 120
            with self.engine.replaying():  # replays are not new alerts
                while todo:
                    if time.monotonic() > deadline:
                        log.warning("replay stopped after 120 s; some detectors warm up from scratch")
                        break
                    batch = await reader.getmany(*todo, timeout_ms=500)
                    for tp, records in batch.items():
                        for r in records:
                            if r.offset >= ends[tp]:
                                break
                            try:
                                self.engine.observe(WindowStat.from_json(r.value or b""))
                                replayed += 1
                            except Exception:  # dead-lettered when it was first read
                                continue
                    todo = [tp for tp in todo if await reader.position(tp) < ends[tp]]
        finally:
            await reader.stop()
            log.info("replayed %d window records in %.1f s", replayed, time.monotonic() - t0)

    async def stop(self) -> None:
        """Stop the clients (idempotent)."""
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            await close_client(consumer, "detect consumer")
        if producer is not None:
            await close_client(producer, "detect producer")

    def _holds_resources(self) -> bool:
        return self._consumer is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until ``stop`` is set; raises :class:`DetectError` when Kafka fails."""
        while not stop.is_set():
            await self.step()

    async def step(self, timeout_ms: int = 500) -> int:
        """Process one batch; returns the alert events produced."""
        assert self._consumer is not None and self._producer is not None, "DetectStage not started"
        if self.failure is not None:
            raise self.failure
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        offsets: dict[TopicPartition, int] = {}
        out: list[tuple[ConsumerRecord[bytes, bytes], OutRecord]] = []
        for tp, records in batch.items():
            self.metrics.consumed.labels(STAGE).inc(len(records))
            for r in sorted(records, key=lambda rec: rec.offset):
                for event in await self._events(r):
                    out.append(
                        (r, OutRecord(self.topics.alerts, event.to_json(), event.fingerprint.encode()))
                    )
                offsets[tp] = r.offset + 1
        try:
            refused = await send_all(self._producer, [rec for _, rec in out])
        except KafkaError as exc:
            raise self.fail(f"{len(out)} alert event(s) to {self.topics.alerts}", exc) from exc
        for refusal in refused:  # refused for good (too large, rejected): dead-lettered, not retried
            source = next(r for r, rec in out if rec is refusal.record)
            await self._dead_letter(source, PRODUCE_FAILED, refusal.detail, raw=refusal.record.value)
        produced = len(out) - len(refused)
        if produced:
            self.metrics.produced.labels(STAGE).inc(produced)
        if offsets:
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # A rebalance moved the partitions: the new owner reads these windows again.
                log.warning("detect: commit skipped after a rebalance (%s)", type(exc).__name__)
            except KafkaError as exc:
                raise self.fail(f"the offset commit of {self.topics.windows}", exc) from exc
        return produced

    async def _events(self, r: ConsumerRecord[bytes, bytes]) -> list[AlertEvent]:
        try:
            stat = WindowStat.from_json(r.value or b"")
        except ValueError as exc:  # RecordError, JSON and UTF-8 errors
            why = exc.reason if isinstance(exc, RecordError) else type(exc).__name__
            await self._dead_letter(r, "invalid_window", f"{why}: {str(exc)[:200]}")
            return []
        try:
            events = self.engine.observe(stat)
            for event in events:
                event.to_json()  # encodable: checked before anything is produced
        except Exception as exc:  # a value the detectors cannot take: this record only
            log.debug("detect: detectors failed on a window record", exc_info=exc)
            detail = f"the detectors failed on it: {type(exc).__name__}: {str(exc)[:200]}"
            await self._dead_letter(r, "invalid_window", detail)
            return []
        return events

    async def _dead_letter(
        self, r: ConsumerRecord[bytes, bytes], reason: str, detail: str, raw: bytes | None = None
    ) -> None:
        """Dead-letter ``r`` (or ``raw``, the output it gave, at its coordinates)."""
        assert self.dead_letters is not None
        raw = (r.value or b"") if raw is None else raw
        letter = self.dead_letters.make(reason, detail, r.topic, r.partition, r.offset, raw)
        try:
            await self.dead_letters.send([letter])
        except KafkaError as exc:
            raise self.fail(f"a dead letter to {self.dead_letters.topic}", exc) from exc
        log.warning("window record %s[%d]@%d dead-lettered: %s", r.topic, r.partition, r.offset, detail)
