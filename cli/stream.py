"""Sub-commands of the stream package: ``broker``, ``topics create``, ``classify``, ``replay``.

Each handler is a thin shell over a library call (:class:`EmbeddedBroker`,
:func:`create_topics`, :class:`ClassifyWorker`, :func:`replay`), so the demo and the tests
use the same code as the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
import threading
from typing import Any

from newswatch.cli.options import add_bootstrap, add_stage_options, with_bootstrap, with_stage_options
from newswatch.errors import ConfigError
from newswatch.logs import report_error
from newswatch.settings import Settings

__all__ = ["add_commands"]

log = logging.getLogger(__name__)


# broker ---------------------------------------------------------------------------------------
def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from newswatch.demo.broker import EmbeddedBroker

    broker = EmbeddedBroker(
        host=args.host, port=args.port or None, storage=args.storage, advertised_host=args.advertised_host
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with broker:
        if args.create_topics:
            kafka = settings.kafka.model_copy(
                update={"bootstrap_servers": broker.bootstrap_servers, "broker_compat": "tansu"}
            )
            from newswatch.io.kafka import create_topics

            asyncio.run(create_topics(kafka, settings.topics.all()))
        print(broker.bootstrap_servers, flush=True)
        log.info(
            "embedded Kafka broker (Tansu, %s) on %s; export NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS=%s "
            "NEWSWATCH_KAFKA_BROKER_COMPAT=tansu; Ctrl-C stops it",
            args.storage,
            broker.bootstrap_servers,
            broker.bootstrap_servers,
            extra={"bootstrap_servers": broker.bootstrap_servers, "storage": args.storage},
        )
        while not done.wait(0.5):
            if not broker.running:
                report_error("broker", "the broker process exited")
                return 1
    return 0


# topics create --------------------------------------------------------------------------------
def _topics_create(args: argparse.Namespace, settings: Settings) -> int:
    from newswatch.io.kafka import create_topics

    settings = with_bootstrap(settings, args)
    created = asyncio.run(create_topics(settings.kafka, settings.topics.all(), partitions=args.partitions))
    for name in settings.topics.all():
        print(f"{name}\t{'created' if name in created else 'exists'}")
    return 0


# classify -------------------------------------------------------------------------------------
async def _run_classify(settings: Settings, host: str, port: int) -> int:
    from newswatch.io.kafka import create_topics
    from newswatch.io.stage import run_until_signal
    from newswatch.metrics import Metrics
    from newswatch.models.engine import ClassifierEngine
    from newswatch.stream.classify import ClassifyWorker

    metrics = Metrics(top_k_entities=settings.metrics.top_k_entities)

    async def build() -> ClassifyWorker:
        topics = settings.topics
        await create_topics(settings.kafka, [topics.posts, topics.scored, topics.panes, topics.dead_letter])
        engine = await asyncio.get_running_loop().run_in_executor(
            None, ClassifierEngine.load, settings.models
        )
        log.info(
            "classify: model %s (%s); %s -> %s",
            engine.model_version,
            engine.backend,
            topics.posts,
            topics.scored,
            extra={
                "model": engine.model_version,
                "backend": engine.backend,
                "group_id": settings.classify.group_id,
            },
        )
        return ClassifyWorker(settings, metrics, engine=engine)

    # raises ClassifyError (exit code 2) when the worker failed
    await run_until_signal(build, metrics=metrics, host=host, port=port)
    return 0


def _classify(args: argparse.Namespace, settings: Settings) -> int:
    settings = with_stage_options(settings, args, "classify")
    updates: dict[str, Any] = {}
    if args.group_id:
        updates["group_id"] = args.group_id
    if args.batch_size:
        updates["batch_size"] = args.batch_size
    if updates:
        settings = settings.model_copy(update={"classify": settings.classify.model_copy(update=updates)})
    return asyncio.run(_run_classify(settings, settings.metrics.host, settings.metrics.port_for("classify")))


# replay ---------------------------------------------------------------------------------------
def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from aiokafka.errors import KafkaError

    from newswatch.demo.replay import (
        ReplayResult,
        closed_until,
        late_at_aggregator,
        load_records,
        replay,
        schedule,
    )
    from newswatch.io.kafka import KafkaIOError, create_topics
    from newswatch.metrics import Metrics

    if args.speed < 0:
        raise ConfigError(f"--speed must be >= 0 (0 = as fast as possible), got {args.speed}")
    settings = with_bootstrap(settings, args)
    topic = args.topic or settings.topics.posts
    records, duplicates = load_records(args.file, source=args.source, limit=args.limit)
    metrics = Metrics()

    async def run() -> ReplayResult:
        await create_topics(settings.kafka, [topic])  # never let the broker auto-create it
        try:
            return await replay(
                records,
                settings.kafka,
                topic,
                speed=args.speed,
                max_gap_s=args.max_gap_s,
                retime=args.retime,
                metrics=metrics,
                progress=not args.quiet and sys.stderr.isatty(),
            )
        except (KafkaError, OSError) as exc:
            raise KafkaIOError(
                f"publishing to {settings.kafka.bootstrap_servers} failed: {type(exc).__name__}: {exc}; "
                "is the broker running? (`newswatch broker`)"
            ) from exc

    agg = settings.aggregate

    async def forecast() -> int:
        closed = None if args.retime else await closed_until(settings.kafka, settings.topics.windows)
        return late_at_aggregator(
            records,
            schedule([r.event_ms for r in records], args.speed, args.max_gap_s),
            partitions=settings.kafka.partitions,
            grace_ms=agg.grace_ms,
            idle_ms=agg.idle_partition_ms,
            retime=args.retime,
            watermark_ms=None if closed is None else closed + agg.grace_ms,
        )

    late = asyncio.run(forecast())
    if late:
        log.warning(
            "at least %d of %d posts will be late at the aggregator (more than aggregate.grace_ms=%d behind "
            "its watermark: older than windows it has closed) and left out of every window; replay "
            "with --retime, or see docs/stream.md 'Event time, the watermark and lateness'",
            late,
            len(records),
            agg.grace_ms,
        )
    result = asyncio.run(run())
    result = dataclasses.replace(result, duplicates=duplicates)
    summary = {"file": str(args.file), "topic": topic, **dataclasses.asdict(result)}
    summary["duration_s"] = round(result.duration_s, 3)
    summary["late_at_aggregator"] = late
    print(json.dumps(summary))
    return 0


def add_commands(subparsers: Any) -> None:  # argparse._SubParsersAction
    """Register this package's sub-commands on the ``newswatch`` parser."""
    p = subparsers.add_parser("broker", help="Run the embedded Kafka-compatible broker (Tansu) until Ctrl-C.")
    p.add_argument("--host", default="127.0.0.1", help="Listen address (default 127.0.0.1).")
    p.add_argument("--port", type=int, default=9092, help="Listen port (default 9092; 0 picks a free one).")
    p.add_argument(
        "--advertised-host",
        default=None,
        help="Host name clients are told to connect to (default: --host), e.g. a Kubernetes Service name.",
    )
    p.add_argument(
        "--storage",
        default="memory://tansu/",
        help="memory://tansu/ (default, lost on exit) or s3://BUCKET/ (set AWS_ENDPOINT etc.).",
    )
    p.add_argument("--create-topics", action="store_true", help="Create every newswatch topic after start.")
    p.set_defaults(func=_broker, log_stage="broker")

    topics = subparsers.add_parser("topics", help="Manage the Kafka topics newswatch uses.")
    tsub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    tc = tsub.add_parser(
        "create", help="Create every topic with one partition count (existing ones are kept)."
    )
    tc.add_argument(
        "--partitions", type=int, default=None, help="Partitions (default NEWSWATCH_KAFKA_PARTITIONS)."
    )
    add_bootstrap(tc)
    tc.set_defaults(func=_topics_create)

    c = subparsers.add_parser("classify", help="Run a classify worker: posts topic -> scored topic.")
    add_stage_options(c, "classify")
    c.add_argument("--group-id", help="Consumer group (default NEWSWATCH_CLASSIFY_GROUP_ID).")
    c.add_argument("--batch-size", type=int, help="Largest batch (default NEWSWATCH_CLASSIFY_BATCH_SIZE).")
    c.set_defaults(func=_classify)

    r = subparsers.add_parser(
        "replay", help="Publish a CSV or JSONL file of posts at real or accelerated speed."
    )
    r.add_argument(
        "file", help="CSV or JSONL, e.g. ../shared/data/stocknet_tweets/stocknet_tweets_2014_2016.csv"
    )
    r.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="Replay speed: 1 real time, 60 = a minute per second, 0 = max.",
    )
    r.add_argument(
        "--max-gap-s", type=float, default=None, help="Cut idle gaps longer than this (replay time)."
    )
    r.add_argument("--retime", action="store_true", help="Set published_at to the send time (live windows).")
    r.add_argument("--limit", type=int, default=None, help="Publish at most this many posts.")
    r.add_argument("--source", default=None, help="Source for rows without one (default: the file name).")
    r.add_argument("--topic", default=None, help="Topic (default NEWSWATCH_TOPICS_POSTS).")
    r.add_argument("--quiet", action="store_true", help="No progress bar.")
    add_bootstrap(r)
    r.set_defaults(func=_replay)

    from newswatch.cli.aggregate import add_aggregate_command
    from newswatch.cli.demo import add_demo_command

    add_aggregate_command(subparsers)
    add_demo_command(subparsers)
