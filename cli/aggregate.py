"""The ``newswatch aggregate`` sub-command (wired into the CLI by ``cli/stream.py``).

``python -m newswatch.cli.aggregate [options]`` runs the same command alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from newswatch.cli.options import add_log_options, add_stage_options, setup_logging, with_stage_options
from newswatch.errors import NewswatchError
from newswatch.logs import report_error
from newswatch.settings import Settings, load_settings

__all__ = ["add_aggregate_command", "main"]


def add_aggregate_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``aggregate`` on the ``newswatch`` sub-command parsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "aggregate",
        help="Run the aggregator: rolling windows per topic, entity and source (faust worker).",
        description=(
            "Read scored posts, keep tumbling and hopping event-time windows in changelogged tables, "
            "write window statistics to the windows topic. Stops cleanly on SIGTERM or Ctrl-C."
        ),
    )
    _add_options(parser)
    parser.set_defaults(func=run_aggregate_command)
    return parser


def _add_options(parser: argparse.ArgumentParser) -> None:
    add_stage_options(parser, "aggregate")
    parser.add_argument(
        "--broker-compat",
        choices=("kafka", "tansu"),
        help="'tansu' for the embedded broker (true changelog end offsets); else settings.",
    )
    parser.add_argument("--data-dir", help="faust data directory.")


def _apply(args: argparse.Namespace, settings: Settings) -> Settings:
    settings = with_stage_options(settings, args, "aggregate")
    update: dict[str, Any] = {}
    if args.broker_compat:
        update["kafka"] = settings.kafka.model_copy(update={"broker_compat": args.broker_compat})
    if args.data_dir:
        update["aggregate"] = settings.aggregate.model_copy(update={"data_dir": args.data_dir})
    return settings.model_copy(update=update) if update else settings


def run_aggregate_command(args: argparse.Namespace, settings: Settings) -> int:
    """Handler of ``newswatch aggregate``: runs the worker until it is stopped."""
    from newswatch.stream.aggregate import run_aggregator

    settings = _apply(args, settings)
    return run_aggregator(settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``aggregate`` alone: ``python -m newswatch.cli.aggregate``."""
    parser = argparse.ArgumentParser(prog="newswatch-aggregate")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (else NEWSWATCH_CONFIG).")
    add_log_options(parser)
    _add_options(parser)
    args = parser.parse_args(argv)
    try:
        setup_logging(args, stage="aggregate")
        return run_aggregate_command(args, load_settings(args.config))
    except NewswatchError as exc:
        report_error("aggregate", str(exc))
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
