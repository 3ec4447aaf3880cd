"""The root of every error newswatch raises on purpose.

Each package has its own ``exceptions``/``errors`` module with subclasses of
:class:`NewswatchError`. ``retriable`` tells a caller whether trying the same
operation again later can succeed (a broker that is down) or not (bad config).
"""

from __future__ import annotations


class NewswatchError(Exception):
    """Base class of newswatch's own errors."""

    retriable: bool = False


class ConfigError(NewswatchError):
    """A setting is missing or invalid; the message says which and how to fix it."""
