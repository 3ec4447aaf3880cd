"""What the aggregator's window arithmetic costs per post as its state fills.

The window engine (:class:`newswatch.stream.windows.WindowEngine`, plain dicts for state, no
faust or Kafka) is fed the demo generator's posts at ``--rate`` posts per second of event
time, with an emit (``collect`` + ``commit``) every 500 ms of event time, as the aggregator
does with the default ``emit_interval_ms``. The default windows are kept (1-minute tumbling,
5-minute and 1-hour hopping), so the state grows for the first two hours, until panes fall
behind the pruning horizon (2 × the longest window + grace), and then stays flat.

It prints one JSON line: CPU microseconds per post in blocks of ``--block-min`` minutes of
event time (all of it, and the part spent in ``collect``), the state size at the end of each
block, and the ratio of each block to the first one, measured in the same run::

    python bench/window_fill.py [--rate 60] [--minutes 150] [--block-min 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import Progress

from newswatch.demo.generator import StreamGenerator
from newswatch.io.schemas import ScoredPost, Sentiment
from newswatch.settings.stream import AggregateSettings
from newswatch.stream.aggregate import window_specs
from newswatch.stream.windows import WindowEngine

EMIT_S = 0.5


def run(rate: float, minutes: int, block_min: int, seed: int = 3) -> dict[str, Any]:
    """Feed the engine ``minutes`` of event time; per-block CPU cost and state size."""
    agg = AggregateSettings()
    clock = [0.0]
    engine = WindowEngine(window_specs(agg), agg.grace_ms, panes={}, seen={}, meta={}, clock=lambda: clock[0])
    start = datetime(2026, 12, 1, 6, tzinfo=UTC)
    gen = StreamGenerator(seed=seed, rate_per_s=rate, start=start, daily_amplitude=0.0)
    rng = random.Random(seed)
    topics = [f"topic-{i}" for i in range(20)]
    blocks: list[dict[str, Any]] = []
    next_emit, block_end = EMIT_S, block_min * 60.0
    n, collect_s, cpu0 = 0, 0.0, time.process_time()
    with Progress(console=Console(stderr=True), transient=True) as bar:
        job = bar.add_task("event-time minutes", total=minutes)
        for t, post in gen.posts():
            clock[0] = t
            score = rng.uniform(-1.0, 1.0)
            sentiment: Sentiment = "bearish" if score < -0.3 else "bullish" if score > 0.3 else "neutral"
            engine.add(ScoredPost(post, rng.choice(topics), 0.9, sentiment, {}, score, "bench", 0, 0, 0.0))
            n += 1
            if t >= next_emit:
                c0 = time.process_time()
                engine.collect()
                engine.commit()
                collect_s += time.process_time() - c0
                next_emit += EMIT_S
            if t >= block_end:
                cpu = time.process_time() - cpu0
                sizes = engine.state_sizes
                blocks.append(
                    {
                        "until_min": round(block_end / 60),
                        "posts": n,
                        "us_per_post": round(1e6 * cpu / n, 1),
                        "collect_us_per_post": round(1e6 * collect_s / n, 1),
                        "panes": sizes["panes"],
                        "seen": sizes["seen"],
                    }
                )
                bar.update(job, completed=block_end / 60)
                if block_end >= minutes * 60:
                    break
                block_end += block_min * 60.0
                n, collect_s, cpu0 = 0, 0.0, time.process_time()
    first = blocks[0]["us_per_post"]
    for b in blocks:
        b["ratio_to_first"] = round(b["us_per_post"] / first, 2)
    return {
        "rate_per_s": rate,
        "minutes": minutes,
        "windows": [s.name for s in window_specs(agg)],
        "blocks": blocks,
        "peak_ratio": max(b["ratio_to_first"] for b in blocks),
        "last_ratio": blocks[-1]["ratio_to_first"],
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=60.0, help="Posts per second of event time.")
    p.add_argument("--minutes", type=int, default=150, help="Minutes of event time.")
    p.add_argument("--block-min", type=int, default=10, help="Minutes per reported block.")
    p.add_argument("--json", action="store_true", help="Only the JSON line on stdout.")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.minutes < args.block_min or args.block_min < 1:
        p.error("need --rate > 0 and --minutes >= --block-min >= 1")
    result = run(args.rate, args.minutes, args.block_min)
    if not args.json:
        for b in result["blocks"]:
            print(
                f"to minute {b['until_min']:4d}: {b['us_per_post']:7.1f} us/post "
                f"(collect {b['collect_us_per_post']:6.1f}), {b['panes']:6d} panes, "
                f"x{b['ratio_to_first']:.2f}",
                file=sys.stderr,
            )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
