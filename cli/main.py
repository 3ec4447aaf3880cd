"""The ``newswatch`` command line: one sub-command per stage or tool.

Each package contributes its sub-commands through ``add_commands(subparsers)`` in
its own ``cli`` module (``newswatch.cli.stream``, ``newswatch.cli.models``,
``newswatch.cli.alerts``). A handler takes ``(args, settings)`` and returns the exit
code. Errors newswatch raises on purpose (:class:`~newswatch.errors.NewswatchError`)
are printed as one line saying what was wrong and how to fix it, without a traceback, and
exit 2. Logging is configured once here (:mod:`newswatch.logs`): ``--log-format human|json``
and ``--log-level`` apply to every stage and to faust's and aiokafka's loggers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from newswatch import __version__
from newswatch.cli.options import add_log_options, setup_logging
from newswatch.errors import NewswatchError
from newswatch.logs import report_error

__all__ = ["build_parser", "main"]

#: Modules that contribute sub-commands, in help order.
COMMAND_MODULES = (
    "newswatch.cli.stream",
    "newswatch.cli.models",
    "newswatch.cli.alerts",
    "newswatch.cli.dlq",
    "newswatch.cli.up",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every package's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="newswatch",
        description="Real-time finance text-stream monitoring: classify, aggregate, detect, alert.",
    )
    parser.add_argument("--version", action="version", version=f"newswatch {__version__}")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (else NEWSWATCH_CONFIG).")
    add_log_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``newswatch`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from newswatch.settings import load_settings

    try:
        setup_logging(args, stage=_stage_of(args))
        settings = load_settings(args.config)
        code: int = args.func(args, settings)
        return code
    except NewswatchError as exc:
        report_error(args.command, str(exc))
        return 2
    except KeyboardInterrupt:
        return 130


def _stage_of(args: argparse.Namespace) -> str:
    """The ``stage`` field of the log records: the stage's metrics label, else the command."""
    return str(getattr(args, "log_stage", None) or args.command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
