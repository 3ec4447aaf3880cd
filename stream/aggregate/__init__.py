"""The aggregate stage: event-time windows of scored posts, kept in faust tables.

:mod:`.stage` is the stage (records in, window statistics out); :mod:`.faust_compat`
holds the workarounds faust needs on Tansu.
"""

from newswatch.stream.aggregate.stage import (
    AggregateError,
    Aggregator,
    build_app,
    export_window_metrics,
    run_aggregator,
    stat_json,
    window_specs,
)

__all__ = [
    "AggregateError",
    "Aggregator",
    "build_app",
    "export_window_metrics",
    "run_aggregator",
    "stat_json",
    "window_specs",
]
