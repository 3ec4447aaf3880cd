"""Sub-commands of the alerts package: ``detect``, ``alerts run``, ``alerts test``, ``notify``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from newswatch.alerts.exceptions import SinkConfigError
from newswatch.cli.options import add_stage_options, with_stage_options

log = logging.getLogger(__name__)


def add_commands(subparsers: Any) -> None:  # argparse._SubParsersAction
    """Register this package's sub-commands on the ``newswatch`` parser."""
    p = subparsers.add_parser(
        "detect",
        help="Run a detector offline over a timestamp,value CSV.",
        description="Score every row of a timestamp,value CSV with the streaming detector and alert rules.",
    )
    p.add_argument("--series", required=True, type=Path, metavar="FILE.csv", help="timestamp,value CSV.")
    p.add_argument("--detector", default=None, help="Detector name (default: alerts.detector).")
    p.add_argument(
        "--direction",
        choices=("up", "down", "both"),
        default="both",
        help="Deviations that count (default both).",
    )
    p.add_argument(
        "--model",
        choices=("auto", "level", "count"),
        default="auto",
        help="What the values are: counts, a generic level, or auto (counts when all are whole and >= 0).",
    )
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    p.set_defaults(func=_detect)

    a = subparsers.add_parser("alerts", help="Detection stage and sink tests.")
    asub = a.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    run = asub.add_parser("run", help="Detection stage: windows topic → detectors → alerts topic.")
    add_stage_options(run, "detect")
    run.set_defaults(func=_alerts_run)
    test = asub.add_parser("test", help="Send a test alert to one sink and report the response.")
    test.add_argument("--sink", required=True, help="Sink name from notify.sinks.")
    test.add_argument("--resolve", action="store_true", help="Send the test alert as resolved.")
    test.set_defaults(func=_alerts_test)
    lst = asub.add_parser("detectors", help="List the registered detectors.")
    lst.set_defaults(func=_list_detectors)

    n = subparsers.add_parser("notify", help="Delivery stage: alerts topic → routed sinks.")
    add_stage_options(n, "notify")
    n.set_defaults(func=_notify)


def _detect(args: argparse.Namespace, settings: Any) -> int:
    from newswatch.alerts.offline import detect_series, read_series

    result = detect_series(
        read_series(args.series), args.detector, settings.alerts, direction=args.direction, model=args.model
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"detector {result['detector']}: {len(result['scores'])} rows, {len(result['alerts'])} alerts")
    for al in result["alerts"]:
        print(f"  {al['start']} → {al['end']}  peak score {al['peak_score']:.3f}")
    return 0


def _list_detectors(args: argparse.Namespace, settings: Any) -> int:
    from newswatch.alerts.detectors import available

    for name in available():
        print(name + (" (default)" if name == settings.alerts.detector else ""))
    return 0


def _alerts_run(args: argparse.Namespace, settings: Any) -> int:
    from newswatch.alerts.stage import DetectStage
    from newswatch.io.stage import run_until_signal

    settings = with_stage_options(settings, args, "detect")
    stage = DetectStage(settings)

    async def build() -> DetectStage:  # called once the metrics port is bound
        alerts, topics = settings.alerts, settings.topics
        log.info(
            "alerts run: %s -> %s; detector %s on windows %s",
            topics.windows,
            topics.alerts,
            alerts.detector,
            ", ".join(alerts.windows),
            extra={"detector": alerts.detector, "windows": list(alerts.windows), "group_id": alerts.group_id},
        )
        return stage

    port = settings.metrics.port_for("detect")
    asyncio.run(run_until_signal(build, metrics=stage.metrics, host=settings.metrics.host, port=port))
    return 0


def _notify(args: argparse.Namespace, settings: Any) -> int:
    from newswatch.alerts.notify import Notifier
    from newswatch.io.stage import run_until_signal

    settings = with_stage_options(settings, args, "notify")
    notifier = Notifier(settings)
    if not notifier.sinks:
        raise SinkConfigError("no sinks configured; set notify.sinks (see docs/alerts.md)")

    async def build() -> Notifier:  # called once the metrics port is bound
        log.info(
            "notify: %s -> %d sink(s): %s",
            settings.topics.alerts,
            len(notifier.sinks),
            ", ".join(notifier.sinks),
            extra={"sinks": list(notifier.sinks), "group_id": settings.notify.group_id},
        )
        return notifier

    port = settings.metrics.port_for("notify")
    asyncio.run(run_until_signal(build, metrics=notifier.metrics, host=settings.metrics.host, port=port))
    return 0


def _alerts_test(args: argparse.Namespace, settings: Any) -> int:
    from newswatch.alerts.testalert import send_test_alert

    outcome = asyncio.run(send_test_alert(settings.notify, args.sink, resolved=args.resolve))
    if outcome.ok:
        print(f"sink {args.sink}: delivered (HTTP {outcome.status}, {outcome.attempts} attempt(s))")
        return 0
    print(
        f"sink {args.sink}: NOT delivered after {outcome.attempts} attempt(s): {outcome.error}",
        file=sys.stderr,
    )
    return 1
