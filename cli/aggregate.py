"""The ``newswatch aggregate`` sub-command (wired into the CLI by ``cli/stream.py``).

``python -m newswatch.cli.aggregate [options]`` runs the same command alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from newswatch.errors import ConfigError, NewswatchError
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
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka brokers (else settings).")
    parser.add_argument(
        "--broker-compat",
        choices=("kafka", "tansu"),
        help="'tansu' for the embedded broker (true changelog end offsets); else settings.",
    )
    parser.add_argument(
        "--metrics-port", type=int, help="Port of /metrics, /healthz, /readyz (0 = free port)."
    )
    parser.add_argument("--data-dir", help="faust data directory.")


def _apply(args: argparse.Namespace, settings: Settings) -> Settings:
    kafka: dict[str, Any] = {}
    if args.bootstrap_servers:
        kafka["bootstrap_servers"] = args.bootstrap_servers
    if args.broker_compat:
        kafka["broker_compat"] = args.broker_compat
    update: dict[str, Any] = {}
    if kafka:
        update["kafka"] = settings.kafka.model_copy(update=kafka)
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port {args.metrics_port} is not a TCP port (0-65535)")
        update["metrics"] = settings.metrics.model_copy(update={"port": args.metrics_port})
    if args.data_dir:
        update["aggregate"] = settings.aggregate.model_copy(update={"data_dir": args.data_dir})
    return settings.model_copy(update=update) if update else settings


def run_aggregate_command(args: argparse.Namespace, settings: Settings) -> int:
    """Handler of ``newswatch aggregate``: runs the worker until it is stopped."""
    from newswatch.stream.aggregate import run_aggregator

    settings = _apply(args, settings)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    return run_aggregator(settings, log_level=level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``aggregate`` alone: ``python -m newswatch.cli.aggregate``."""
    parser = argparse.ArgumentParser(prog="newswatch-aggregate")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (else NEWSWATCH_CONFIG).")
    parser.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING).")
    _add_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return run_aggregate_command(args, load_settings(args.config))
    except NewswatchError as exc:
        print(f"newswatch aggregate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
