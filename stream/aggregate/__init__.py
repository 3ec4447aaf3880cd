"""The aggregate stage: event-time windows of scored posts, kept in faust tables.

:mod:`.stage` is the stage (records in, window statistics out); :mod:`.app` builds its
faust app, :mod:`.worker` runs it until a signal, :mod:`.overlay` batches its table
writes, and :mod:`.faust_compat` holds the work-around faust needs on Tansu.
"""

from newswatch.stream.aggregate.app import build_app
from newswatch.stream.aggregate.stage import (
    AggregateError,
    Aggregator,
    export_window_metrics,
    window_specs,
)
from newswatch.stream.aggregate.worker import run_aggregator

__all__ = [
    "AggregateError",
    "Aggregator",
    "build_app",
    "export_window_metrics",
    "run_aggregator",
    "window_specs",
]
