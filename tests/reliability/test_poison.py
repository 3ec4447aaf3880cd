"""Poison records (issue 19): no stage crash-loops on a record.

For each stage, real ``newswatch`` processes on the session broker: poison records are put in
front of valid ones on the stage's input topic, the stage runs, is stopped with SIGTERM,
restarted, SIGKILLed, restarted again. Asserted each time: the stage got past the poison (the
valid records after it were processed: scored posts, windows, alerts, notifications received by
a real loopback webhook), every poison record is on the dead-letter topic once, with its reason
and its exact bytes, and counted in ``newswatch_stream_dead_lettered_total`` by the run that read
it (the restarts count none: nothing is re-read), and the stage never exited non-zero.

The records a stage fails to *produce* (too large, refused by the broker) are dead-lettered as
``produce_failed``: through a real notifier process (an incident record over 1 MB), and for
classify, detect and the aggregator's window records with a producer whose ``max_request_size``
is below what they write (the embedded broker enforces no ``message.max.bytes``; a real producer
refusing the record stands for a broker that does).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from faust.events import Event
from faust.types.tuples import Message
from prometheus_client.parser import text_string_to_metric_families

from newswatch.alerts.events import AlertEvent
from newswatch.demo.broker import free_port
from newswatch.io.kafka import create_topics, make_producer
from newswatch.io.produce import OutRecord, send_all
from newswatch.io.schemas import LIMITS, DeadLetter, WindowStat
from newswatch.metrics import Metrics
from newswatch.settings import KafkaSettings, Settings
from newswatch.settings.alerts import AlertSettings
from newswatch.settings.stream import ClassifySettings
from tests.support.aggregate import BASE_MS, scored
from tests.support.alerts import alert, entity_window, make_alert
from tests.support.kafka import post_json, produce_records, read_topic, value
from tests.support.poll import wait_until
from tests.support.receivers import Receiver
from tests.support.settings import aggregate_settings, kafka_settings, topic_settings

pytestmark = [pytest.mark.fault, pytest.mark.slow]

DEAD = "newswatch_stream_dead_lettered_total"
Poison = list[tuple[bytes, str]]  # (record, reason)


class StageProcess:
    """``newswatch <command>`` as a child process with a YAML config; /metrics on a free port."""

    def __init__(self, name: str, command: list[str], config: dict[str, Any], workdir: Path) -> None:
        self.name = name
        self.command = command
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.exits: list[int] = []

    def start(self) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
        argv = [sys.executable, "-m", "newswatch.cli.main", "--config", str(self.config)]
        argv += ["--log-level", "INFO", *self.command, "--metrics-port", str(self.port)]
        with open(self.log, "ab") as out:
            out.write(f"\n----- start {len(self.exits) + 1}\n".encode())
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=out, env=env)

    def detail(self) -> str:
        return f"{self.name} log:\n{self.log.read_text(errors='replace')[-4000:]}"

    def alive(self) -> bool:
        """Running; a process that exited on its own fails the test at once, with its log."""
        assert self.proc is not None
        code = self.proc.poll()
        assert code is None, f"{self.name} exited with {code} on its own\n{self.detail()}"
        return True

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample of metric ``name`` (counters: the ``_total`` series) by its labels."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name:
                    out[tuple(sorted(s.labels.items()))] = s.value
        return out

    def dead_lettered(self) -> Counter[str]:
        """``newswatch_stream_dead_lettered_total`` of this run, by reason."""
        return Counter({dict(k)["reason"]: int(v) for k, v in self.samples(DEAD).items()})

    def kill(self) -> None:
        """Clean-up: SIGKILL a process still running (a failed test leaves none behind)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None and self.alive()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} ignored {sig.name}\n{self.detail()}") from None
        self.exits.append(code)
        return code


class TopicReader:
    """Reads a topic from the start on each :meth:`poll`, with a fresh consumer (``read_topic``)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.bootstrap = kafka.bootstrap_servers
        self.topic = topic
        self.records: list[Any] = []

    async def __aenter__(self) -> TopicReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def poll(self) -> list[bytes]:
        """Every value so far (tombstones as ``b""``), once more than before or after 3 s;
        :attr:`records` keeps the records."""
        seen = len(self.records)
        self.records = await read_topic(self.bootstrap, self.topic, lambda rs: len(rs) > seen, 3)
        return [r.value or b"" for r in self.records]


async def _dead_letters(kafka: KafkaSettings, topic: str, n: int, timeout_s: float = 30) -> list[DeadLetter]:
    records = await read_topic(kafka.bootstrap_servers, topic, lambda rs: len(rs) >= n, timeout_s)
    return [DeadLetter.from_json(r.value or b"") for r in records]


async def _run_three_times(
    stage: StageProcess,
    feed: Callable[[int], Any],
    processed: Callable[[int], Any],
    expected_dead: Counter[str] | dict[int, Counter[str]],
    prepare: Callable[[int], Any] | None = None,
) -> None:
    """Run 1 reads the poison and the first valid records, SIGTERM (exit 0); run 2 the next valid
    records, SIGKILL; run 3 the last ones, SIGTERM (exit 0). ``feed(k)`` produces the valid records
    of run ``k`` (run 1's after the poison), ``processed(k)`` says whether they went through;
    ``expected_dead`` is what run 1 dead-letters (or what each run does; by default the restarts
    dead-letter nothing: nothing is read twice), ``prepare(k)`` runs before run ``k`` starts."""
    per_run = {1: expected_dead} if isinstance(expected_dead, Counter) else expected_dead
    try:
        for run, sig in enumerate((signal.SIGTERM, signal.SIGKILL, signal.SIGTERM), start=1):
            if prepare is not None:
                await prepare(run)
            stage.start()
            await feed(run)
            expected = per_run.get(run, Counter())

            async def all_true(run: int = run, expected: Counter[str] = expected) -> bool:
                if not stage.alive():
                    return False
                done = processed(run)
                if asyncio.iscoroutine(done):
                    done = await done
                return bool(done) and stage.dead_lettered() == expected

            def detail(run: int = run) -> str:
                counts = {
                    what: sum(stage.samples(f"newswatch_stream_messages_{what}_total").values())
                    for what in ("consumed", "produced")
                }
                return f"run {run}: {counts}, dead-lettered {dict(stage.dead_lettered())}\n{stage.detail()}"

            await wait_until(
                all_true, 90, f"{stage.name} run {run} past the poison", interval_s=0.2, detail=detail
            )
            code = stage.stop(sig)
            if sig == signal.SIGTERM:
                assert code == 0, f"run {run} exit code {code}\n{stage.detail()}"
    finally:
        stage.kill()
    assert stage.exits[1] == -signal.SIGKILL


def _assert_dead_letters(letters: list[DeadLetter], stage: str, poison: Poison, input_topic: str) -> None:
    """Each poison record is dead-lettered exactly once, with its reason and exact bytes."""
    reasons = {reason for _, reason in poison}
    mine = [d for d in letters if d.topic == input_topic and d.reason in reasons]
    got = Counter((d.raw, d.reason) for d in mine)
    for raw, reason in poison:
        assert got[(raw, reason)] == 1, (
            f"{raw[:60]!r}: {[(d.reason, d.detail) for d in mine if d.raw == raw]}"
        )
    assert all(d.stage == stage and d.detail for d in mine)
    offsets = [d.offset for d in mine]
    assert len(set(offsets)) == len(offsets) == len(poison), "one dead letter per poison record"


# -------------------------------------------------------------------------------- the poison

BIG = "𝔵" * 1_000  # 4 bytes each in UTF-8


def _json(d: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**d, **changes}).encode()


NESTED = b"[" * 100_000 + b"]" * 100_000


def _post_poison() -> Poison:
    base = json.loads(post_json("poison", 0))
    return [
        (b"{not json", "invalid_json"),
        (b"null", "not_object"),
        (_json(base, text=42), "wrong_type"),
        (_json(base, text="a " * 15_000), "field_too_long"),
        (_json(base, published_at="2999-01-01T00:00:00Z"), "future_timestamp"),
        (_json(base, published_at=float("nan")), "wrong_type"),
        (NESTED, "invalid_json"),
    ]


def _scored_poison() -> Poison:
    base = json.loads(scored("poison", BASE_MS + 30_000, -0.5).to_json())
    return [
        (b"{not json", "invalid_json"),
        (b"null", "not_object"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (_json(base, score="abc"), "wrong_type"),
        (_json(base, score=float("nan")), "wrong_type"),
        (_json(base, score=1e308), "invalid_value"),
        (_json(base, sentiment="ecstatic"), "wrong_type"),
        (_json(base, entities="$AAPL"), "wrong_type"),
        (_json(base, text="x" * 30_000), "field_too_long"),
        (_json(base, id="i" * 5_000), "field_too_long"),
        (_json(base, text="a \ud800 b"), "invalid_utf8"),
        (_json(base, published_at="9999-12-31T00:00:00Z"), "future_timestamp"),
        (_json(base, published_at="0001-01-01T00:00:00Z"), "bad_timestamp"),
        (NESTED, "invalid_json"),
    ]


def _window(i: int, count: int, key: str) -> WindowStat:
    return entity_window(i, count, key, example_id=f"{key}-p{i}")


def _window_poison() -> list[tuple[bytes, str, str]]:
    """(record, reason, what the detail names): detect dead-letters them all as invalid_window."""
    base = json.loads(_window(0, 40, "$POISON").to_json())
    return [
        (b"{not json", "invalid_window", "JSONDecodeError"),
        (b"null", "invalid_window", "not_object"),
        (_json(base, count="abc"), "invalid_window", "wrong_type"),
        (_json(base, mean_score=float("nan")), "invalid_window", "wrong_type"),
        (_json(base, kind="planet"), "invalid_window", "wrong_type"),
        (_json(base, examples="xyz"), "invalid_window", "wrong_type"),
        (_json(base, key="k" * 100_000), "invalid_window", "field_too_long"),
        (_json(base, key="$X\udfff"), "invalid_window", "invalid_utf8"),
        (_json(base, count=10**400), "invalid_window", "the detectors failed on it: OverflowError"),
        (NESTED, "invalid_window", "invalid_json"),
    ]


def _alert_poison() -> Poison:
    base = json.loads(make_alert(key="$POISON").to_json())
    return [
        (b"null", "invalid_alert"),  # F3: these three crashed `newswatch notify` on every restart
        (_json(base, observed="abc"), "invalid_alert"),
        (_json(base, examples="xyz"), "invalid_alert"),
        (b"{not json", "invalid_alert"),
        (b"[]", "invalid_alert"),
        (_json(base, observed=float("nan")), "invalid_alert"),
        (_json(base, status="maybe"), "invalid_alert"),
        (_json(base, key="k" * 100_000), "invalid_alert"),
        (_json(base, key="$X\ud800"), "invalid_alert"),
        (_json(base, start_ms=10**400), "invalid_alert"),
        (NESTED, "invalid_alert"),
    ]


async def _produce(
    kafka: KafkaSettings, topic: str, records: list[tuple[bytes | None, bytes, int | None]]
) -> None:
    """Publish in order to one partition (the poison before the valid records)."""
    producer = AIOKafkaProducer(**kafka.client_kwargs(), max_request_size=8_000_000)
    await producer.start()
    try:
        for key, value, ts in records:
            await producer.send_and_wait(topic, value, key=key, partition=0, timestamp_ms=ts)
    finally:
        await producer.stop()


# -------------------------------------------------------------------------------- classify


async def test_classify_gets_past_poison_posts_across_restarts(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = Settings(
        kafka=kafka_settings(bootstrap, partitions=1),
        topics=topic_settings(unique),
        classify=ClassifySettings(group_id=f"classify-{unique}", batch_max_wait_ms=50),
    )
    topics = settings.topics
    config = settings.model_dump(mode="json", include={"kafka", "topics", "classify"})
    stage = StageProcess("classify", ["classify"], config, tmp_path)
    poison = _post_poison()
    ids: dict[int, list[str]] = {k: [f"c{k}-{i}" for i in range(3)] for k in (1, 2, 3)}
    scored_ids: set[str] = set()

    async def feed(run: int) -> None:
        records: list[tuple[bytes | None, bytes, int | None]] = [(b"poison", p, None) for p, _ in poison]
        records = records if run == 1 else []
        records += [(i.encode(), post_json(i, n), None) for n, i in enumerate(ids[run])]
        await _produce(settings.kafka, topics.posts, records)

    await create_topics(settings.kafka, [topics.posts, topics.scored, topics.dead_letter], partitions=1)
    async with TopicReader(settings.kafka, topics.scored) as reader:

        async def processed(run: int) -> bool:
            scored_ids.update(json.loads(v)["id"] for v in await reader.poll())
            return set(ids[run]) <= scored_ids

        await _run_three_times(stage, feed, processed, Counter(r for _, r in poison))
    letters = await _dead_letters(settings.kafka, topics.dead_letter, len(poison))
    _assert_dead_letters(letters, "classify", poison, topics.posts)


# -------------------------------------------------------------------------------- aggregate


async def test_aggregate_gets_past_poison_scored_records_across_restarts(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = aggregate_settings(bootstrap, unique, tmp_path)
    config = settings.model_dump(mode="json", include={"kafka", "topics", "aggregate", "alerts"})
    stage = StageProcess("aggregate", ["aggregate"], config, tmp_path)
    poison = _scored_poison()
    n = 4  # posts per run, all in one 10 s window of their own entity

    def posts(run: int) -> list[Any]:
        start = BASE_MS + run * 60_000
        return [scored(f"a{run}-{i}", start + i * 10, -0.5, entities=(f"$RUN{run}",)) for i in range(n)]

    async def feed(run: int) -> None:
        records: list[tuple[bytes | None, bytes, int | None]] = [(b"poison", p, None) for p, _ in poison]
        records = records if run == 1 else []
        records += [
            (p.post.id.encode(), p.to_json(), int(p.post.published_at.timestamp() * 1000)) for p in posts(run)
        ]
        await _produce(settings.kafka, settings.topics.scored, records)

    topics = settings.topics
    await create_topics(settings.kafka, [topics.scored, topics.windows, topics.dead_letter], partitions=1)
    async with TopicReader(settings.kafka, topics.windows) as reader:

        async def processed(run: int) -> bool:
            stats = [WindowStat.from_json(v) for v in await reader.poll()]
            mine = [s for s in stats if s.key == f"$RUN{run}" and s.window == "tumbling_10000"]
            return bool(mine) and mine[-1].count == n  # the latest record of the run's one window

        await _run_three_times(stage, feed, processed, Counter(r for _, r in poison))
    letters = await _dead_letters(settings.kafka, settings.topics.dead_letter, len(poison))
    _assert_dead_letters(letters, "aggregate", poison, settings.topics.scored)


# -------------------------------------------------------------------------------- detect


async def test_detect_gets_past_poison_window_records_across_restarts(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = Settings(
        kafka=kafka_settings(bootstrap, partitions=1),
        topics=topic_settings(unique),
        alerts=AlertSettings(signals=("volume",), group_id=f"detect-{unique}"),
    )
    topics = settings.topics
    config = settings.model_dump(mode="json", include={"kafka", "topics", "alerts"})
    stage = StageProcess("detect", ["alerts", "run"], config, tmp_path)
    poison = _window_poison()
    firing: set[str] = set()

    async def feed(run: int) -> None:
        key = f"$RUN{run}"
        records: list[tuple[bytes | None, bytes, int | None]] = [(b"poison", p, None) for p, _, _ in poison]
        records = records if run == 1 else []  # stamped now: replayed by every restart
        stats = [_window(i, 40 + (i * 7) % 5, key) for i in range(30)] + [
            _window(30, 400, key),
            _window(31, 420, key),
        ]
        records += [(f"entity:{key}:tumbling_60000".encode(), s.to_json(), s.end_ms) for s in stats]
        await _produce(settings.kafka, topics.windows, records)

    await create_topics(settings.kafka, [topics.windows, topics.alerts, topics.dead_letter], partitions=1)
    async with TopicReader(settings.kafka, topics.alerts) as reader:

        async def processed(run: int) -> bool:
            firing.update(AlertEvent.from_json(v).key for v in await reader.poll())
            return f"$RUN{run}" in firing

        await _run_three_times(stage, feed, processed, Counter({"invalid_window": len(poison)}))
    letters = await _dead_letters(settings.kafka, topics.dead_letter, len(poison))
    _assert_dead_letters(letters, "detect", [(p, r) for p, r, _ in poison], topics.windows)
    for raw, _, what in poison:
        [letter] = [d for d in letters if d.raw == raw]
        assert what in letter.detail, (what, letter.detail)


# -------------------------------------------------------------------------------- notify


def _big_incident() -> list[AlertEvent]:
    """Three alerts sharing their posts (one incident), ~520 kB each: the incident record of all
    three is over 1 MB, more than a newswatch producer sends (MAX_RECORD_BYTES)."""
    posts = tuple(
        {"id": f"big{i}", "text": BIG, **{f"f{j}": "𝔵" * LIMITS.url for j in range(6)}} for i in range(10)
    )
    return [
        alert("entity", "$BIG", "volume", posts, 50, 10, 50),
        alert("entity", "$BIG", "negative_share", posts, 0.8, 0.1, 50),
        alert("topic", "Bigtopic", "volume", posts, 500, 100, 500),
    ]


async def test_notify_gets_past_poison_alerts_across_restarts(
    bootstrap: str, unique: str, receiver: Receiver, tmp_path: Path
) -> None:
    """F3: ``null``, ``"observed": "abc"`` and ``"examples": "xyz"`` crashed ``newswatch notify``
    with a traceback on every restart. Also: an incident-log record that is no incident (read on
    start) and an incident record too large to produce."""
    kafka = kafka_settings(bootstrap, partitions=1)
    topics = topic_settings(unique)
    incident_log, delivery_log = f"incidents-{unique}", f"delivered-{unique}"
    notify = {
        "group_id": f"notify-{unique}",
        "delivery_log_topic": delivery_log,
        "incident_log_topic": incident_log,
        "group_wait_s": 0.0,
        "incident_wait_s": 0.3,
        "sinks": [{"name": "hook", "type": "webhook", "url": receiver.url}],
    }
    config = {
        "kafka": kafka.model_dump(mode="json", exclude_unset=True),
        "topics": topics.model_dump(),
        "notify": notify,
    }
    stage = StageProcess("notify", ["notify"], config, tmp_path)
    poison = _alert_poison()
    big = _big_incident()
    not_an_incident = b'{"id": "inc_x", "members": "xyz"}'
    await create_topics(kafka, [topics.alerts, topics.alerts_dead_letter], partitions=1)
    await create_topics(kafka, [incident_log, delivery_log], compacted=[incident_log, delivery_log])

    async def prepare(run: int) -> None:
        """Records of the logs the notifier reads back on start: each crashed every start before."""
        if run == 2:  # KeyError: 'dedup_key'
            await produce_records(kafka, incident_log, [(b"inc_x", not_an_incident, None)])
        if run == 3:  # UnicodeDecodeError
            await produce_records(kafka, delivery_log, [(b"\xff\xfe|not utf-8", b"{}", None)])

    events = {k: [make_alert(key=f"$RUN{k}-{i}") for i in range(2)] for k in (1, 2, 3)}

    async def feed(run: int) -> None:
        records: list[tuple[bytes | None, bytes, int | None]] = [(b"poison", p, None) for p, _ in poison]
        records = records + [(e.fingerprint.encode(), e.to_json(), None) for e in big] if run == 1 else []
        records += [(e.fingerprint.encode(), e.to_json(), None) for e in events[run]]
        await _produce(kafka, topics.alerts, records)

    async def processed(run: int) -> bool:
        if not {e.idempotency_key for e in events[run]} <= set(receiver.alert_keys()):
            return False
        if run != 2:
            return True
        # Before run 2 is SIGKILLed: the record it dead-lettered is tombstoned (after its commit).
        await log.poll()
        return [r.value for r in log.records if r.key == b"inc_x"][-1:] == [None]

    # The receiver takes bodies up to 1 MB (aiohttp's default): the big incident's notification is
    # answered 413, and its three alerts are dead-lettered as rejected.
    # The incident-log record is dead-lettered by run 2 alone: it is tombstoned after run 2's commit.
    expected = {
        1: Counter(invalid_alert=len(poison), produce_failed=1, rejected=3),
        2: Counter(invalid_incident=1),
    }
    async with TopicReader(kafka, incident_log) as log:
        await _run_three_times(stage, feed, processed, expected, prepare)
    letters = await _dead_letters(kafka, topics.alerts_dead_letter, len(poison) + 5)
    _assert_dead_letters(letters, "notify", poison, topics.alerts)
    for letter in letters:
        if letter.reason == "invalid_alert":
            assert letter.detail.startswith("not an alert event: "), letter.detail
    [bad_incident] = [d for d in letters if d.reason == "invalid_incident"]
    assert (bad_incident.topic, bad_incident.raw) == (incident_log, not_an_incident)
    [refused] = [d for d in letters if d.reason == "produce_failed"]
    assert refused.topic == incident_log and "MessageSizeTooLargeError" in refused.detail
    assert "raw truncated from" in refused.detail, "the 1 MB record: a prefix and its SHA-256"
    # Every valid alert went through exactly once; the incident of the big alerts was planned.
    keys = Counter(receiver.alert_keys())
    assert all(keys[e.idempotency_key] == 1 for run in events.values() for e in run)


# ------------------------------------------------------------------ records Kafka refuses to take
#
# The embedded broker enforces no message.max.bytes, so each stage's producer is given a lower
# max_request_size: a real producer refusing a record (MessageSizeTooLargeError), as a broker with
# a smaller limit would. Records under the limit go through; the dead letter of a refused record is
# refused too (it is larger: base64) and is sent again with a 1 KiB prefix and the SHA-256.


def _small_producers(monkeypatch: pytest.MonkeyPatch, module: Any, limit: int) -> None:
    real = make_producer
    monkeypatch.setattr(
        module, "make_producer", lambda kafka, **kw: real(kafka, **{**kw, "max_request_size": limit})
    )


def _assert_refused(letter: DeadLetter, stage: str, whole: bytes) -> None:
    assert (letter.stage, letter.reason) == (stage, "produce_failed"), letter
    assert "MessageSizeTooLargeError" in letter.detail, letter.detail
    assert letter.raw == whole[:1024] and hashlib.sha256(whole).hexdigest() in letter.detail, letter.detail


async def test_send_all_returns_only_the_records_kafka_refuses(kafka: KafkaSettings, unique: str) -> None:
    topic = f"refuse-{unique}"
    await create_topics(kafka, [topic], partitions=1)
    producer = make_producer(kafka, max_request_size=2_000)
    await producer.start()
    try:
        records = [OutRecord(topic, b"small-1"), OutRecord(topic, b"x" * 5_000), OutRecord(topic, b"small-2")]
        refused = await send_all(producer, records)
    finally:
        await producer.stop()
    assert [r.record for r in refused] == [records[1]]
    assert "5000 bytes" in refused[0].detail and "MessageSizeTooLargeError" in refused[0].detail
    got = await read_topic(kafka.bootstrap_servers, topic, lambda rs: len(rs) >= 2, 10)
    assert [r.value for r in got] == [b"small-1", b"small-2"]


async def test_classify_dead_letters_a_scored_record_kafka_refuses(
    bootstrap: str, unique: str, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import newswatch.stream.classify as classify

    _small_producers(monkeypatch, classify, 6_000)
    settings = Settings(
        kafka=kafka_settings(bootstrap, partitions=1),
        topics=topic_settings(unique),
        classify=ClassifySettings(group_id=f"classify-{unique}", batch_max_wait_ms=50),
    )
    topics = settings.topics
    await create_topics(settings.kafka, [topics.posts, topics.scored, topics.dead_letter], partitions=1)
    big = post_json("big", 1, text="$AAPL " + BIG * 4)  # 16 kB: its scored record too
    posts = [(b"p0", post_json("p0", 0)), (b"big", big), (b"p2", post_json("p2", 2))]
    metrics = Metrics()
    async with classify.ClassifyWorker(settings, metrics, engine=engine) as worker:
        await _produce(settings.kafka, topics.posts, [(k, v, None) for k, v in posts])
        await wait_until(
            lambda: value(metrics, DEAD, stage="classify", reason="produce_failed") == 1, 60, "dead letter"
        )
        scored = await read_topic(bootstrap, topics.scored, lambda rs: len(rs) >= 2, 30)
        assert worker.failure is None
    assert sorted(json.loads(r.value or b"")["id"] for r in scored) == ["p0", "p2"]
    [letter] = await _dead_letters(settings.kafka, topics.dead_letter, 1)
    _assert_refused(letter, "classify", big)
    assert (letter.topic, letter.offset) == (topics.posts, 1)


async def test_detect_dead_letters_an_alert_event_kafka_refuses(
    bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import newswatch.alerts.stage as detect

    _small_producers(monkeypatch, detect, 6_000)
    settings = Settings(
        kafka=kafka_settings(bootstrap, partitions=1),
        topics=topic_settings(unique),
        alerts=AlertSettings(signals=("volume",), group_id=f"detect-{unique}"),
    )
    topics = settings.topics
    await create_topics(settings.kafka, [topics.windows, topics.alerts, topics.dead_letter], partitions=1)
    heavy = tuple({"id": f"h{i}", "text": BIG, "url": None, "score": -0.9} for i in range(3))  # 12 kB

    def series(key: str, examples: tuple[dict[str, Any], ...] | None = None) -> list[WindowStat]:
        stats = [_window(i, 40 + (i * 7) % 5, key) for i in range(30)] + [
            _window(30, 400, key),
            _window(31, 420, key),
        ]
        return [replace(s, examples=examples) if examples else s for s in stats]

    records = [(b"k", s.to_json(), s.end_ms) for s in [*series("$HEAVY", heavy), *series("$LIGHT")]]
    metrics = Metrics()
    async with (
        detect.DetectStage(settings, metrics) as stage,
        TopicReader(settings.kafka, topics.alerts) as reader,
    ):
        await _produce(settings.kafka, topics.windows, records)  # type: ignore[arg-type]
        alerts: list[AlertEvent] = []

        async def light_alert() -> bool:
            await stage.step(timeout_ms=200)
            alerts[:] = [AlertEvent.from_json(v) for v in await reader.poll()]
            return any(a.key == "$LIGHT" for a in alerts)

        await wait_until(light_alert, 60, "the $LIGHT alert")
        assert stage.failure is None
    assert {a.key for a in alerts} == {"$LIGHT"}
    [letter] = await _dead_letters(settings.kafka, topics.dead_letter, 1)
    assert letter.topic == topics.windows and letter.raw.startswith(b'{"fingerprint"'), "the refused event"
    assert letter.reason == "produce_failed" and "MessageSizeTooLargeError" in letter.detail
    assert value(metrics, DEAD, stage="detect", reason="produce_failed") == 1


async def test_aggregate_dead_letters_a_window_record_kafka_refuses(
    bootstrap: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aggregator's own producer (window records); faust's changelog producer is faust's."""
    import newswatch.stream.aggregate.stage as aggregate

    _small_producers(monkeypatch, aggregate, 8_000)
    settings = aggregate_settings(bootstrap, unique, tmp_path)
    topics = settings.topics
    await create_topics(settings.kafka, [topics.scored, topics.windows, topics.dead_letter], partitions=1)
    metrics = Metrics()
    agg = aggregate.Aggregator(settings, metrics)
    light = scored("light", BASE_MS, 0.5, entities=("$LIGHT",), topic="calm", source="quiet")
    heavy = scored("heavy", BASE_MS + 10, -0.9, entities=("$HEAVY",), topic="loud", source="noisy")
    heavy = replace(heavy, post=replace(heavy.post, url="𝔵" * LIMITS.url))  # 8 kB in every example
    try:
        for offset, post in enumerate((light, heavy)):
            message = Message(topics.scored, 0, offset, BASE_MS / 1000, 0, [], None, post.to_json(), None)
            await agg.handle(Event(agg.app, None, post.to_json(), [], message))
        await agg._emit()  # the emit alone: the tables (faust's changelog producer) are not started here
        assert agg.failure is None
    finally:
        await agg._on_shutdown()
    keys: set[str] = set()
    async with TopicReader(settings.kafka, topics.windows) as reader:

        async def light() -> bool:
            keys.update(WindowStat.from_json(v).key for v in await reader.poll())
            return "$LIGHT" in keys

        await wait_until(light, 30, "the $LIGHT windows")
    assert "$HEAVY" not in keys, "its windows were refused"
    refused = value(metrics, DEAD, stage="aggregate", reason="produce_failed")
    letters = await _dead_letters(settings.kafka, topics.dead_letter, int(refused))
    assert refused >= 2 and len(letters) == refused  # at least $HEAVY's tumbling and hopping windows
    for letter in letters:
        assert (letter.topic, letter.offset, letter.reason) == (topics.windows, -1, "produce_failed")
        assert "MessageSizeTooLargeError" in letter.detail and len(letter.raw) == 1024
