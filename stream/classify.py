"""The classify stage: posts topic → engine → scored topic, at least once.

:class:`ClassifyWorker` is an aiokafka consumer-group member. It builds batches by size
(``batch_size``) and by time (``batch_max_wait_ms`` after the first record), decodes each
message (rejections go to the dead-letter topic with the reason and the original bytes),
runs the engine in a worker thread, and produces one :class:`ScoredPost` per valid post,
keyed by post id with Kafka timestamp = ``published_at`` (event time). Offsets are
committed in batch order and only after every record of the batch (scored and
dead-lettered) is acknowledged, so a crash replays at most the uncommitted batches:
posts are scored at least once and never lost. At most ``max_in_flight_batches`` batches
are being scored or produced at a time; while one is produced the next is scored.

A batch the engine fails on is split in halves until the failing posts are isolated;
those are dead-lettered as ``model_error`` and the rest is scored. A scored record Kafka
refuses for good (too large, rejected by the broker) dead-letters its post as
``produce_failed`` with the original bytes; only a Kafka failure that
outlasts the client's retries stops the worker without committing: :meth:`~Stage.fail`
records a :class:`ClassifyError` that :meth:`wait` and :meth:`run` raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord

from newswatch.io.kafka import KafkaIOError, close_client, make_consumer, make_producer, partition_lag
from newswatch.io.produce import PRODUCE_FAILED, RECORD_ERRORS, OutRecord, send_all
from newswatch.io.schemas import DeadLetter, ScoredPost
from newswatch.io.stage import Stage, StageError
from newswatch.metrics import Metrics
from newswatch.models.engine import Prediction
from newswatch.settings import Settings
from newswatch.stream.decode import Decoded, PostDecoder, Rejection
from newswatch.stream.panes import PaneBatch, PaneBuilder
from newswatch.stream.windows import pane_size, window_specs

__all__ = ["ClassifyError", "ClassifyWorker", "Engine"]

log = logging.getLogger(__name__)

_POLL_MS = 200
_LAG_EVERY_S = 1.0


class ClassifyError(StageError):
    """The classify worker stopped because Kafka failed beyond retries (exit code 2)."""


class Engine(Protocol):
    """What the worker needs from :class:`newswatch.models.engine.ClassifierEngine`."""

    @property
    def model_version(self) -> str: ...

    @property
    def backend(self) -> str: ...

    def predict(self, texts: Sequence[str]) -> list[Prediction]: ...


@dataclass(frozen=True, slots=True)
class _Failed:
    error: str


class _Revoker(ConsumerRebalanceListener):
    def __init__(self, worker: ClassifyWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker._drain(timeout_s=10.0)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("classify: assigned %s", sorted(str(tp) for tp in assigned))
        self.worker._joined.set()


class ClassifyWorker(Stage):
    """One member of the classify consumer group.

    Parameters
    ----------
    settings
        The whole settings tree (``kafka``, ``topics``, ``classify`` are used).
    metrics
        Where the worker counts (``stage`` label ``classify``; a fresh registry if omitted).
    engine
        A loaded classifier engine (``predict`` runs in a worker thread).

    Examples
    --------
    >>> async with ClassifyWorker(settings, metrics, engine=engine) as worker:  # doctest: +SKIP
    ...     await worker.wait()
    """

    name = "classify"
    error = ClassifyError
    restart_note = "nothing was committed past the failure: the restart scores the uncommitted batches"

    def __init__(self, settings: Settings, metrics: Metrics | None = None, *, engine: Engine) -> None:
        super().__init__(settings, metrics)
        self.engine = engine
        self.stage = self.name
        cfg = settings.classify
        self.batch_size = cfg.batch_size
        self.max_wait_s = cfg.batch_max_wait_ms / 1000.0
        self.decoder = PostDecoder.from_settings(cfg)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(cfg.max_in_flight_batches)
        self._pending: asyncio.Queue[asyncio.Task[dict[TopicPartition, int]] | None] = asyncio.Queue()
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._stopping = asyncio.Event()
        self._joined = asyncio.Event()
        self._fetch_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._last_lag = 0.0
        # Pane records go out in batch order (each batch waits for the one before to append its
        # own), so the aggregator mostly sees the offset ranges of a partition in order.
        self.panes = PaneBuilder(pane_size(window_specs(settings.aggregate))) if cfg.write_panes else None
        self._pane_turn = asyncio.Event()
        self._pane_turn.set()

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, join the group and start consuming; a second call raises ``RuntimeError``."""
        self._claim_start()
        kafka = self.settings.kafka
        self._producer = make_producer(kafka)
        self._consumer = make_consumer(kafka, group_id=self.settings.classify.group_id)
        try:
            await self._producer.start()
            self._consumer.subscribe([self.settings.topics.posts], listener=_Revoker(self))
            await self._consumer.start()
        except (KafkaError, OSError) as exc:
            await self._close_clients()
            raise KafkaIOError(
                f"classify cannot start on {kafka.bootstrap_servers}: {type(exc).__name__}: {exc}"
            ) from exc
        except BaseException:
            await self._close_clients()
            raise
        self._open_dead_letters(self._producer, self.settings.topics.dead_letter)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="newswatch-classify")
        self.metrics.model_info.info(
            {"version": str(self.engine.model_version), "backend": str(self.engine.backend)}
        )
        self._fetch_task = asyncio.create_task(self._fetch_loop(), name="classify-fetch")
        self._commit_task = asyncio.create_task(self._commit_loop(), name="classify-commit")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Stop fetching, score and commit what was fetched, then close; a no-op when stopped."""
        if self._consumer is None:
            return
        self._stopping.set()
        tasks = [t for t in (self._fetch_task, self._commit_task) if t is not None]
        _done, not_done = await asyncio.wait(tasks, timeout=timeout_s) if tasks else (set(), set())
        while not self._pending.empty():  # batches left behind by a timed-out stop
            leftover = self._pending.get_nowait()
            if leftover is not None:
                not_done.add(leftover)  # type: ignore[arg-type]
        for task in not_done:
            task.cancel()
        for task in not_done:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_clients()

    async def _close_clients(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        executor, self._executor = self._executor, None
        if consumer is not None:
            await close_client(consumer, "classify consumer")
        if producer is not None:
            await close_client(producer, "classify producer")
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def wait_joined(self, timeout_s: float = 60.0) -> None:
        """Return once the worker has joined its group (first assignment); raise ``TimeoutError``."""
        await asyncio.wait_for(self._joined.wait(), timeout_s)

    async def wait(self) -> None:
        """Return when the worker has stopped; raise :class:`ClassifyError` if it failed."""
        tasks = [t for t in (self._fetch_task, self._commit_task) if t is not None]
        if tasks:
            await asyncio.wait(tasks)
        if self.failure is not None:
            raise self.failure

    async def run(self, stop: asyncio.Event) -> None:
        """Score until ``stop`` is set (then return) or the worker fails (then raise)."""
        waiter = asyncio.create_task(self.wait())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if waiter.done():
            await waiter
        else:
            waiter.cancel()

    def _holds_resources(self) -> bool:
        return self._consumer is not None

    # state -----------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Running, not failed, and holding at least one partition of the posts topic."""
        return (
            self._consumer is not None
            and self.failure is None
            and not self._stopping.is_set()
            and bool(self._consumer.assignment())
        )

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped the worker, if any (:attr:`failure`)."""
        return self.failure

    # loops -----------------------------------------------------------------------------------
    async def _fetch_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                batch = await self._collect()
                if batch:
                    await self._dispatch(batch)
        except Exception as exc:
            self._halt(f"the fetch from {self.settings.topics.posts}", exc)
        finally:
            await self._pending.put(None)

    async def _collect(self) -> list[ConsumerRecord[bytes, bytes]]:
        assert self._consumer is not None
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline: float | None = None
        while len(records) < self.batch_size and not self._stopping.is_set():
            if deadline is None:
                timeout_ms = _POLL_MS
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                timeout_ms = max(1, int(left * 1000))
            got = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=self.batch_size - len(records)
            )
            for rs in got.values():
                records.extend(rs)
            if records and deadline is None:
                deadline = time.monotonic() + self.max_wait_s
            await self._update_lag()
        return records

    async def _dispatch(self, batch: list[ConsumerRecord[bytes, bytes]]) -> None:
        await self._slots.acquire()
        self._in_flight += 1
        self._drained.clear()
        self.metrics.in_flight_batches.labels(self.stage).set(self._in_flight)
        turn, self._pane_turn = self._pane_turn, asyncio.Event()
        task = asyncio.create_task(self._process(batch, turn, self._pane_turn))
        await self._pending.put(task)

    async def _commit_loop(self) -> None:
        while True:
            task = await self._pending.get()
            if task is None:
                break
            try:
                offsets = await task
            except Exception as exc:
                self._halt("a batch of scored posts and dead letters", exc)
                offsets = None
            finally:
                self._slots.release()
                self._in_flight -= 1
                self.metrics.in_flight_batches.labels(self.stage).set(self._in_flight)
            if offsets is not None and self.failure is None:
                await self._commit(offsets)
            if self._in_flight == 0:
                self._drained.set()
        self._drained.set()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        owned = consumer.assignment()
        mine = {tp: off for tp, off in offsets.items() if tp in owned}
        if not mine:
            return
        try:
            await consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced: the new owner re-reads these records (at least once).
            log.warning("classify: commit skipped after a rebalance: %s", exc)
        except KafkaError as exc:
            self._halt(f"the offset commit of {self.settings.topics.posts}", exc)

    async def _drain(self, timeout_s: float) -> None:
        """Wait until every dispatched batch is committed (before giving partitions away)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout_s)

    def _halt(self, what: str, exc: BaseException) -> None:
        """:meth:`~Stage.fail` from a loop: record the error and stop fetching."""
        if self.failure is None:
            log.debug("classify: failure", exc_info=exc)
        self.fail(what, exc)
        self._stopping.set()

    async def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < _LAG_EVERY_S or self._consumer is None:
            return
        self._last_lag = now
        for tp, lag in (await partition_lag(self._consumer)).items():
            self.metrics.consumer_lag.labels(self.stage, tp.topic, str(tp.partition)).set(lag)

    # one batch -------------------------------------------------------------------------------
    async def _process(
        self,
        batch: list[ConsumerRecord[bytes, bytes]],
        turn: asyncio.Event | None = None,
        done: asyncio.Event | None = None,
    ) -> dict[TopicPartition, int]:
        """Decode, score, produce (scored posts, then the batch's panes once ``turn`` is set) and
        wait for every ack; returns the offsets to commit. Sets ``done`` once its panes are
        appended (or it failed), for the next batch."""
        try:
            return await self._score_and_produce(batch, turn, done)
        finally:
            if done is not None:
                done.set()  # also when the batch failed before its panes were appended

    async def _score_and_produce(
        self,
        batch: list[ConsumerRecord[bytes, bytes]],
        turn: asyncio.Event | None,
        done: asyncio.Event | None,
    ) -> dict[TopicPartition, int]:
        assert self._producer is not None and self.dead_letters is not None
        m, stage = self.metrics, self.stage
        m.consumed.labels(stage).inc(len(batch))
        offsets: dict[TopicPartition, int] = {}
        letters: list[DeadLetter] = []
        valid: list[tuple[ConsumerRecord[bytes, bytes], Decoded]] = []
        for rec in batch:
            tp = TopicPartition(rec.topic, rec.partition)
            offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
            result = self.decoder.decode(rec.value)
            if isinstance(result, Rejection):
                letters.append(self._letter(rec, result.reason, result.detail))
            else:
                valid.append((rec, result))
        out: list[tuple[ConsumerRecord[bytes, bytes], OutRecord, ScoredPost]] = []
        if valid:
            started = time.perf_counter()
            # The raw text: the engine applies the one clean-up (models.text.clean_text) itself,
            # exactly as training does, so the model sees what it was trained on.
            preds = await self._predict([d.post.text for _, d in valid])
            inference_s = time.perf_counter() - started
            m.inference_seconds.labels(str(self.engine.backend)).observe(inference_s)
            m.batch_size.labels(stage).observe(len(valid))
            scored_ms = int(time.time() * 1000)
            topic = self.settings.topics.scored
            for (rec, dec), pred in zip(valid, preds, strict=True):
                if isinstance(pred, _Failed):
                    letters.append(self._letter(rec, "model_error", pred.error))
                    continue
                if pred.error:  # the engine's result for a blank text (the decoder rejects those first)
                    letters.append(self._letter(rec, "empty_text", pred.error))
                    continue
                post = dec.post
                event = ScoredPost(
                    post=post,
                    topic=pred.topic,
                    topic_prob=float(pred.topic_prob),
                    sentiment=pred.sentiment,
                    sentiment_probs={k: float(v) for k, v in pred.sentiment_probs.items()},
                    score=float(pred.score),
                    model_version=str(self.engine.model_version),
                    record_ms=int(rec.timestamp),
                    scored_ms=scored_ms,
                    inference_ms=inference_s * 1000.0,
                )
                stamp = int(post.published_at.timestamp() * 1000)
                out.append((rec, OutRecord(topic, event.to_json(), post.id.encode(), stamp), event))
        # The scored records and the panes are produced side by side: the panes of a batch wait
        # only for the previous batch's panes to be appended (``turn``), not for any ack. A post
        # whose scored record Kafka then refuses for good is dead-lettered and still counted in
        # its window (its pane row was written with the others).
        sending = asyncio.create_task(send_all(self._producer, [o for _, o, _ in out]))  # noqa: RUF006 (awaited below)
        pane_acks: list[tuple[PaneBatch, bytes, asyncio.Future[Any] | BaseException]] = []
        try:
            if self.panes is not None:
                if turn is not None:
                    await turn.wait()
                pane_acks = await self._send_panes(batch, [(rec, sp) for rec, _, sp in out])
        except BaseException:
            await asyncio.gather(sending, return_exceptions=True)
            raise
        finally:
            if done is not None:
                done.set()  # appended: the next batch may append its panes (their acks come later)
        refused = {id(r.record): r for r in await sending}
        scored = [(rec, sp) for rec, o, sp in out if id(o) not in refused]
        letters += [
            self._letter(rec, PRODUCE_FAILED, refused[id(o)].detail) for rec, o, _ in out if id(o) in refused
        ]
        await self.dead_letters.send(letters)
        await self._await_panes(pane_acks)
        acked_ms = time.time() * 1000
        m.produced.labels(stage).inc(len(scored))
        for rec, _ in scored:
            m.e2e_latency.observe(max(0.0, (acked_ms - rec.timestamp) / 1000.0))
        return offsets

    async def _send_panes(
        self,
        batch: list[ConsumerRecord[bytes, bytes]],
        scored: list[tuple[ConsumerRecord[bytes, bytes], ScoredPost]],
    ) -> list[tuple[PaneBatch, bytes, asyncio.Future[Any] | BaseException]]:
        """Append the batch's pane records (one per input partition, covering every offset of
        the batch there, dead-lettered posts included); returns them with their ack futures."""
        assert self._producer is not None and self.panes is not None
        ranges: dict[int, list[int]] = {}
        for rec in batch:
            lo_hi = ranges.setdefault(rec.partition, [rec.offset, rec.offset])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], rec.offset), max(lo_hi[1], rec.offset)
        by_partition: dict[int, list[tuple[int, ScoredPost]]] = {p: [] for p in ranges}
        for rec, sp in scored:
            by_partition[rec.partition].append((rec.offset, sp))
        topic, src = self.settings.topics.panes, self.settings.topics.posts
        # Posts partition p → panes partition p mod n: the aggregator's partitions get the
        # partitions' records evenly, and each input partition's records stay in order.
        n = len(await self._producer.partitions_for(topic))
        sent: list[tuple[PaneBatch, bytes, asyncio.Future[Any] | BaseException]] = []
        for partition, (lo, hi) in sorted(ranges.items()):
            posts = sorted(by_partition[partition], key=lambda t: t[0])
            for pane in self.panes.build(src, partition, lo, hi, posts):
                value = pane.to_json()
                stamp = max((r.ts for r in pane.rows), default=int(time.time() * 1000))
                try:
                    ack = await self._producer.send(
                        topic,
                        value=value,
                        key=f"{src}/{partition}".encode(),
                        partition=partition % n,
                        timestamp_ms=stamp,
                    )
                except RECORD_ERRORS as exc:  # the client's own size check
                    sent.append((pane, value, exc))
                    continue
                sent.append((pane, value, ack))
        return sent

    async def _await_panes(
        self, sent: list[tuple[PaneBatch, bytes, asyncio.Future[Any] | BaseException]]
    ) -> None:
        """Wait for the pane records' acks; one refused for good is dead-lettered (``produce_failed``,
        its bytes can be replayed to the panes topic), any other error fails the batch."""
        assert self.dead_letters is not None
        letters = []
        for pane, value, ack in sent:
            try:
                if isinstance(ack, BaseException):
                    raise ack
                await ack
            except RECORD_ERRORS as exc:
                detail = f"the pane record of {pane.src}/{pane.partition} [{pane.lo}, {pane.hi}]: {exc!r}"
                letters.append(
                    self.dead_letters.make(
                        PRODUCE_FAILED, detail[:500], pane.src, pane.partition, pane.lo, value
                    )
                )
        if letters:
            await self.dead_letters.send(letters)

    def _letter(self, rec: ConsumerRecord[bytes, bytes], reason: str, detail: str) -> DeadLetter:
        assert self.dead_letters is not None
        return self.dead_letters.make(reason, detail, rec.topic, rec.partition, rec.offset, rec.value or b"")

    async def _predict(self, texts: list[str]) -> list[Prediction | _Failed]:
        """Engine predictions; a failing batch is bisected so only failing posts are lost to the DLQ."""
        loop = asyncio.get_running_loop()
        try:
            return list(await loop.run_in_executor(self._executor, self.engine.predict, texts))
        except Exception as exc:
            if len(texts) == 1:
                return [_Failed(f"{type(exc).__name__}: {exc}"[:300])]
            log.warning("classify: engine failed on a batch of %d, splitting: %s", len(texts), exc)
            half = len(texts) // 2
            return [*await self._predict(texts[:half]), *await self._predict(texts[half:])]
