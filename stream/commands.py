"""Sub-commands of this package (filled in by the package's owner)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(subparsers: Any) -> None:  # argparse._SubParsersAction
    """Register this package's sub-commands on the ``newswatch`` parser."""
    del subparsers
    _ = argparse
