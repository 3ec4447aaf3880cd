"""``newswatch classify`` with the zero-cost engine: one classify worker process for ``bench/ceiling.py``.

The same wiring as the ``classify`` command (:func:`newswatch.io.stage.run_until_signal`
with ``/metrics`` and ``/readyz``, the posts, scored and dead-letter topics created, the
``classify`` settings of the config file) with :class:`ZeroEngine` in place of the model,
which the command has no option for. Stops on SIGTERM or SIGINT::

    NEWSWATCH_METRICS_PORT=9500 python bench/ceiling_runner.py --config settings.yaml
    python bench/ceiling_runner.py --config settings.yaml --profile classify.prof   # cProfile

With ``--profile`` the whole process runs under :mod:`cProfile` timed by the process's CPU
time (waiting on the broker costs nothing; the engine's worker thread does next to nothing)
and the stats are written on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import sys
import time
from pathlib import Path

from zero_engine import ZeroEngine  # bench/ is no package: the script's folder is on sys.path

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
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(args.config)
    if args.profile is None:
        asyncio.run(run(settings))
        return 0
    profiler = cProfile.Profile(time.process_time)  # CPU time: waiting on the broker is not a cost
    profiler.enable()
    try:
        asyncio.run(run(settings))
    finally:
        profiler.disable()
        profiler.dump_stats(str(args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
