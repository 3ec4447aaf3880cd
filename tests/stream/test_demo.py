"""``newswatch demo`` options (the full demo runs for minutes: `make demo`)."""

from __future__ import annotations

import argparse

from newswatch.cli.demo import add_demo_command
from newswatch.demo.run import demo_settings
from newswatch.settings import Settings


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_demo_command(parser.add_subparsers())
    return parser.parse_args(["demo", *argv])


def test_no_incident_flag_and_defaults() -> None:
    assert _parse("--no-incident", "--no-ui", "--duration", "300").no_incident is True
    assert _parse().no_incident is False


def test_demo_gathers_an_incident_for_one_window_plus_grace() -> None:
    s = demo_settings(Settings(), "127.0.0.1:1", True, "http://127.0.0.1:2/hook")
    assert s.notify.incidents and s.notify.incident_wait_s >= s.aggregate.tumbling_ms / 1000
