"""Options more than one command takes, and how they override the settings."""

from __future__ import annotations

import argparse

from newswatch.settings import Settings

__all__ = ["add_bootstrap", "with_bootstrap"]


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
