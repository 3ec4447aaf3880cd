"""Options more than one command takes, and how they override the settings.

Every stage command (``classify``, ``aggregate``, ``alerts run``, ``notify``) takes the same
connection and port flags through :func:`add_stage_options` and applies them with
:func:`with_stage_options`. Each stage has its own default metrics port
(:data:`~newswatch.settings.STAGE_METRICS_PORTS`), so they can run side by side on one host.
"""

from __future__ import annotations

import argparse
from typing import Any

from newswatch.errors import ConfigError
from newswatch.logs import FORMATS, configure
from newswatch.settings import STAGE_METRICS_PORTS, Settings

__all__ = [
    "add_bootstrap",
    "add_log_options",
    "add_stage_options",
    "setup_logging",
    "with_bootstrap",
    "with_stage_options",
]


def add_bootstrap(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap-servers HOST:PORT``."""
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka to use (else NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS).",
    )


def with_bootstrap(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` with ``--bootstrap-servers`` applied, when given."""
    servers = getattr(args, "bootstrap_servers", None)
    if not servers:
        return settings
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": servers})}
    )


def add_stage_options(parser: argparse.ArgumentParser, stage: str) -> None:
    """``--bootstrap-servers``, ``--metrics-host`` and ``--metrics-port`` of stage ``stage``."""
    add_bootstrap(parser)
    parser.add_argument(
        "--metrics-host",
        metavar="HOST",
        help="Bind address of /metrics, /healthz, /readyz (else NEWSWATCH_METRICS_HOST, 127.0.0.1).",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help=(
            "Port of /metrics, /healthz, /readyz; 0 picks a free one "
            f"(else NEWSWATCH_METRICS_PORT, else {STAGE_METRICS_PORTS[stage]})."
        ),
    )
    parser.set_defaults(log_stage=stage)


def with_stage_options(settings: Settings, args: argparse.Namespace, stage: str) -> Settings:
    """``settings`` with the stage flags applied and ``metrics.port`` resolved for ``stage``.

    The result's ``metrics.port`` is a number: ``--metrics-port``, else ``metrics.port``
    (``NEWSWATCH_METRICS_PORT``), else the stage's default. Raises
    :class:`~newswatch.errors.ConfigError` for a port outside 0-65535.
    """
    settings = with_bootstrap(settings, args)
    port = getattr(args, "metrics_port", None)
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"--metrics-port {port} is not a TCP port (0-65535)")
    metrics: dict[str, Any] = {"port": settings.metrics.port_for(stage) if port is None else port}
    host = getattr(args, "metrics_host", None)
    if host:
        metrics["host"] = host
    return settings.model_copy(update={"metrics": settings.metrics.model_copy(update=metrics)})


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format`` (global options of ``newswatch``)."""
    parser.add_argument(
        "--log-level",
        default=None,
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING or ERROR for every logger (default: newswatch INFO, libraries WARNING).",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help="human (default) or json: one object per line (else NEWSWATCH_LOG_FORMAT).",
    )


def setup_logging(args: argparse.Namespace, stage: str | None = None) -> None:
    """Configure the one log handler from ``--log-level``/``--log-format``.

    Stage commands (and ``broker``) log their status at INFO by default; the other commands
    keep newswatch's loggers at WARNING. Raises :class:`~newswatch.errors.ConfigError` for an
    unknown level or format.
    """
    try:
        configure(
            stage=getattr(args, "log_stage", None) or stage,
            fmt=getattr(args, "log_format", None),
            level=getattr(args, "log_level", None),
            status=bool(getattr(args, "log_stage", None)),  # a stage (or the broker): INFO by default
        )
    except ValueError as exc:
        configure(stage=stage, fmt="human")
        raise ConfigError(str(exc)) from None
