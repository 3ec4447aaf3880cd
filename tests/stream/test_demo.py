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


def test_demo_numbers_come_from_the_demo_section() -> None:
    from newswatch.demo.generator import StreamGenerator
    from newswatch.settings.stream import DemoSettings

    demo = DemoSettings(tumbling_ms=5_000, hopping_ms=30_000, grace_ms=1_000, warmup_windows=3, seed=3)
    s = demo_settings(Settings(demo=demo), "127.0.0.1:1", True, "http://127.0.0.1:2/hook")
    assert s.aggregate.tumbling_ms == 5_000 and s.aggregate.hopping == ((30_000, 5_000),)
    assert s.aggregate.grace_ms == 1_000 and s.alerts.warmup_windows == 3
    assert s.alerts.windows == ("tumbling_5000",)
    assert set(s.alerts.windows) <= set(s.aggregate.window_names())  # what the settings validator checks
    gen = StreamGenerator.from_settings(s.demo)
    assert (gen.seed, gen.rate_per_s) == (3, demo.rate_per_s)
    assert gen.incident is not None and gen.incident.ticker == demo.incident_ticker
    assert gen.incident.rate_per_s == demo.incident_rate_per_s
    assert StreamGenerator.from_settings(s.demo, incident=False).incident is None


def test_the_stream_starts_on_a_window_boundary() -> None:
    """Every key starts at once: a stream started mid-window would give each key a part-window
    as its first, learned as its normal level."""
    from datetime import UTC, datetime

    from newswatch.demo.run import stream_start

    for now_ms in (1_800_000_000_000, 1_800_000_000_001, 1_800_000_004_500, 1_800_000_009_999):
        start = stream_start(datetime.fromtimestamp(now_ms / 1000, UTC), 10_000)
        start_ms = round(start.timestamp() * 1000)
        assert start_ms % 10_000 == 0 and 0 <= start_ms - now_ms < 10_000
