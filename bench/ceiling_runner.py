"""``newswatch classify`` with the zero-cost engine: one classify worker process for ``bench/ceiling.py``.

The same wiring as the ``classify`` command (:func:`newswatch.io.stage.run_until_signal`
with ``/metrics`` and ``/readyz``, the posts, scored and dead-letter topics created, the
``classify`` settings of the config file) with :class:`ZeroEngine` in place of the model,
which the command has no option for. Stops on SIGTERM or SIGINT::

    NEWSWATCH_METRICS_PORT=9500 python bench/ceiling_runner.py --config settings.yaml
    python bench/ceiling_runner.py --config settings.yaml --profile classify.prof   # cProfile
    python bench/ceiling_runner.py --config settings.yaml --profile agg.prof --newswatch aggregate

With ``--profile`` the whole process runs under :mod:`cProfile` timed by the process's CPU
time (waiting on the broker costs nothing; the engine's worker thread does next to nothing)
and the stats are written on exit. ``--newswatch ARGS…`` runs a real stage instead,
``newswatch --config CONFIG ARGS…`` (to profile it the same way; threads other than the main
one are not profiled, though their CPU time is counted in whatever the main thread runs).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import logging
import sys
import time
from pathlib import Path

from zero_engine import ZeroEngine  # bench/ is no package: the script's folder is on sys.path

from newswatch.cli.main import main as newswatch_main
from newswatch.io.kafka import create_topics
from newswatch.io.stage import run_until_signal
from newswatch.metrics import Metrics
from newswatch.settings import Settings, load_settings
from newswatch.stream.classify import ClassifyWorker


async def run(settings: Settings) -> None:
    """Run one classify worker with the zero engine until a signal."""
    metrics = Metrics(top_k_entities=settings.metrics.top_k_entities)

    async def build() -> ClassifyWorker:
        topics = settings.topics
        await create_topics(settings.kafka, [topics.posts, topics.scored, topics.dead_letter])
        return ClassifyWorker(settings, metrics, engine=ZeroEngine())

    await run_until_signal(
        build, metrics=metrics, host=settings.metrics.host, port=settings.metrics.port_for("classify")
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the worker (profiled with ``--profile``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--config", required=True, help="YAML settings file.")
    p.add_argument("--profile", type=Path, help="Write cProfile stats of the process here on exit.")
    p.add_argument(
        "--newswatch", nargs=argparse.REMAINDER, help="Run `newswatch --config CONFIG ARGS...` instead."
    )
    args = p.parse_args(argv)

    if args.newswatch:  # imported before the profiler starts: start-up is not the stage's cost
        importlib.import_module("newswatch.stream.aggregate")

    def body() -> int:
        if args.newswatch:
            return newswatch_main(["--config", args.config, *args.newswatch])
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        asyncio.run(run(load_settings(args.config)))
        return 0

    if args.profile is None:
        return body()
    profiler = cProfile.Profile(time.process_time)  # CPU time: waiting on the broker is not a cost
    profiler.enable()
    try:
        return body()
    finally:
        profiler.disable()
        profiler.dump_stats(str(args.profile))


if __name__ == "__main__":
    sys.exit(main())
