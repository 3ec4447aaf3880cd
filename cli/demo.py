"""``newswatch demo``: the whole pipeline locally, with a scripted incident."""

from __future__ import annotations

import json
from typing import Any

from newswatch.demo import run as demo_run
from newswatch.demo.run import DemoError, DemoOptions, run_demo
from newswatch.settings import Settings
from newswatch.settings.stream import DemoSettings


def add_demo_command(subparsers: Any) -> None:
    """Register ``newswatch demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline locally with a scripted incident",
        description=demo_run.__doc__.split("\n\n")[1] if demo_run.__doc__ else None,
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=f"seconds of generated posts (default: demo.duration_s, {DemoSettings().duration_s:g})",
    )
    parser.add_argument("--no-ui", action="store_true", help="no live view; print one JSON summary line")
    parser.add_argument(
        "--no-incident", action="store_true", help="the same stream without the scripted incident"
    )
    parser.add_argument(
        "--bootstrap-servers", metavar="HOST:PORT", help="use this Kafka instead of an embedded broker"
    )
    parser.set_defaults(func=_demo_command)


def _demo_command(args: Any, settings: Settings) -> int:
    if args.duration is not None and args.duration <= 0:
        raise DemoError("--duration must be a positive number of seconds, e.g. --duration 120")
    options = DemoOptions(
        duration_s=args.duration,
        ui=not args.no_ui,
        bootstrap_servers=args.bootstrap_servers,
        incident=not args.no_incident,
    )
    print(json.dumps(run_demo(settings, options)), flush=True)
    return 0
