"""``newswatch dlq inspect`` and ``newswatch dlq replay``: the dead-letter topics, handled."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import Progress

from newswatch.cli.options import add_bootstrap, with_bootstrap
from newswatch.io.dlq import read_dead_letters, replay_dead_letters, summarise
from newswatch.settings import Settings

__all__ = ["add_commands"]


def _topic(args: argparse.Namespace, settings: Settings) -> str:
    if args.topic:
        return str(args.topic)
    return settings.topics.alerts_dead_letter if args.alerts else settings.topics.dead_letter


def _inspect(args: argparse.Namespace, settings: Settings) -> int:
    settings = with_bootstrap(settings, args)
    topic = _topic(args, settings)
    reads = asyncio.run(read_dead_letters(settings.kafka, topic))
    out = {"topic": topic, **summarise(reads, samples=args.samples)}
    if args.json:
        print(json.dumps(out), flush=True)
        return 0
    print(f"{topic}: {out['total']} dead letters ({out['unreadable']} unreadable)")
    for group in out["by_reason"]:
        print(f"  {group['count']:>8}  {group['stage']}/{group['reason']}")
        for sample in group["samples"]:
            print(f"            {sample['origin']}  {sample['detail']}")
            print(f"            {sample['raw']!r} ({sample['raw_bytes']} bytes)")
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    settings = with_bootstrap(settings, args)
    topic = _topic(args, settings)
    with Progress(console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"replaying {topic}", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        outcome = asyncio.run(
            replay_dead_letters(
                settings.kafka,
                topic,
                reasons=args.reason or (),
                stages=args.stage or (),
                to_topic=args.to_topic,
                progress=tick,
            )
        )
    print(outcome.to_json(), flush=True)
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    add_bootstrap(parser)
    parser.add_argument("--topic", help="Dead-letter topic to read (default: topics.dead_letter).")
    parser.add_argument(
        "--alerts",
        action="store_true",
        help="Read the alerts' dead-letter topic (topics.alerts_dead_letter).",
    )


def add_commands(subparsers: Any) -> None:  # argparse._SubParsersAction
    """Register ``dlq inspect`` and ``dlq replay``."""
    dlq = subparsers.add_parser("dlq", help="Inspect dead letters, and re-publish them once fixed.")
    sub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    p = sub.add_parser("inspect", help="Counts by stage and reason, with samples of each.")
    _common(p)
    p.add_argument("--samples", type=int, default=3, help="Samples per reason (default 3).")
    p.add_argument("--json", action="store_true", help="One JSON line instead of the text report.")
    p.set_defaults(func=_inspect)
    r = sub.add_parser(
        "replay",
        help="Re-publish the original bytes to the topic they came from (each dead letter once).",
    )
    _common(r)
    r.add_argument("--reason", action="append", help="Only this reason (repeatable).")
    r.add_argument("--stage", action="append", help="Only dead letters of this stage (repeatable).")
    r.add_argument("--to-topic", help="Publish here instead of each record's original topic.")
    r.set_defaults(func=_replay)
