"""A classify worker process whose engine is slowed by real work: ``python -m tests.reliability.slow_worker``.

The engine wrapper runs the real model ``repeat`` times per batch and returns the last
(real) result, so every post is scored for real while the stage falls behind its input.
SIGUSR1 sets ``repeat`` to 1 (catch up); SIGTERM stops gracefully. Settings come from the
``NEWSWATCH_*`` environment; ``SLOW_REPEAT`` and ``SLOW_METRICS_PORT`` configure the rest.
On exit the largest in-flight batch count seen (sampled every 2 ms) is written to
``SLOW_REPORT``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from newswatch.io.http import StageServer
from newswatch.metrics import Metrics
from newswatch.models.engine import ClassifierEngine
from newswatch.settings import load_settings
from newswatch.stream.classify import ClassifyWorker


class SlowEngine:
    """The real engine, run ``repeat`` times per batch (CPU-bound slowness, real results)."""

    def __init__(self, engine: ClassifierEngine, repeat: int) -> None:
        self.engine = engine
        self.repeat = repeat
        self.calls = 0

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    @property
    def backend(self) -> str:
        return self.engine.backend

    def predict(self, texts: Sequence[str]) -> list[Any]:
        result: list[Any] = []
        for _ in range(max(1, self.repeat)):
            result = list(self.engine.predict(texts))
        self.calls += 1
        return result


async def main() -> None:
    settings = load_settings()
    engine = SlowEngine(ClassifierEngine.load(settings.models), int(os.environ.get("SLOW_REPEAT", "5")))
    metrics = Metrics()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: setattr(engine, "repeat", 1))
    peak = 0.0
    worker = ClassifyWorker(settings, metrics, engine=engine)

    async def sample() -> None:
        nonlocal peak
        while True:
            value = metrics.registry.get_sample_value(
                "newswatch_stream_in_flight_batches", {"stage": "classify"}
            )
            peak = max(peak, value or 0.0)
            await asyncio.sleep(0.002)

    port = int(os.environ.get("SLOW_METRICS_PORT", "0"))
    async with StageServer(metrics.registry, ready=lambda: worker.ready, port=port), worker:
        sampler = asyncio.create_task(sample())
        await stop.wait()
        sampler.cancel()
    Path(os.environ["SLOW_REPORT"]).write_text(json.dumps({"peak_in_flight": peak, "calls": engine.calls}))


if __name__ == "__main__":
    asyncio.run(main())
