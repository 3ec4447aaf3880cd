"""SIGKILL classify mid-stream and replay its input: duplicates reach the aggregator, counts stay exact.

The classify stage is at-least-once: a worker killed between producing a batch and
committing its offsets re-scores that batch after the restart. Here the kill is followed
by a replay of the posts topic from its start (a worker in a fresh consumer group, what an
operator does to re-process after an incident), so *every* post scored before the kill is
scored again: the scored topic certainly carries duplicates. The aggregator (a real faust worker process) must
count each post id once: its final windows equal a reference computed from the unique
posts, and its duplicate counter equals the number of duplicate records.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newswatch.io.kafka import create_topics
from newswatch.io.schemas import Post, ScoredPost
from newswatch.metrics import Metrics
from newswatch.models.engine import ClassifierEngine
from newswatch.settings import Settings
from newswatch.settings.stream import ClassifySettings
from newswatch.stream.classify import ClassifyWorker
from newswatch.stream.panes import PaneBatch
from tests.support.aggregate import BASE_MS, AggregatorProcess, WindowReader, reference
from tests.support.kafka import post_json, produce_records, read_topic, scored_ids
from tests.support.poll import wait_until
from tests.support.settings import FAST_GROUPS, aggregate_settings, stage_env

POSTS = 160


async def pane_events(settings: Settings, ids: list[str]) -> list[ScoredPost]:
    """Every row of the panes topic as the post the aggregator read (its score, bearish or not,
    topic, entities, source, event time), in topic order, read until each of ``ids`` is there.

    The reference for ``aggregate.input: panes`` is built from these, not from the scored
    records: a post scored twice can score slightly differently in another batch (int8
    activations are quantised per batch), and the aggregator keeps the first pane row of a post,
    which need not be the first scored record of it.
    """
    records = await read_topic(
        settings.kafka.bootstrap_servers,
        settings.topics.panes,
        lambda rs: set(ids) <= {r.id for rec in rs for r in PaneBatch.from_json(rec.value or b"").rows},
        timeout_s=120,
    )
    rows = [r for rec in records for r in PaneBatch.from_json(rec.value or b"").rows]
    return [
        ScoredPost(
            post=Post(
                r.id,
                r.text,
                r.source,
                datetime.fromtimestamp(r.ts / 1000, UTC),
                r.url,
                entities=tuple(r.entities),
            ),
            topic=r.topic,
            topic_prob=1.0,
            sentiment="bearish" if r.negative else "neutral",
            sentiment_probs={},
            score=r.score,
            model_version="pane row",
            record_ms=r.ts,
            scored_ms=r.ts,
            inference_ms=0.0,
        )
        for r in rows
    ]


STEP_MS = 20  # all posts within 3.2 s of event time: less than the 5 s grace, so none can be late


@pytest.mark.fault
@pytest.mark.slow
@pytest.mark.parametrize("aggregate_input", ["panes", "scored"])
async def test_killed_and_replayed_classify_duplicates_do_not_change_aggregates(
    bootstrap: str, unique: str, engine: ClassifierEngine, tmp_path: Path, aggregate_input: str
) -> None:
    """Killed in the middle of its batches and replayed from the start, the classify stage scores
    posts twice and writes their panes twice, with other batch boundaries (``panes``: the offset
    ranges overlap those merged before) or their scored records twice (``scored``)."""
    settings = aggregate_settings(bootstrap, unique, tmp_path, partitions=2, input=aggregate_input)  # type: ignore[arg-type]
    settings = settings.model_copy(
        update={
            "classify": ClassifySettings(
                group_id=f"classify-{unique}", batch_size=4, batch_max_wait_ms=20, max_in_flight_batches=3
            )
        }
    )
    await create_topics(settings.kafka, settings.topics.all())
    agg = AggregatorProcess(settings, tmp_path)
    agg.start()
    log = (tmp_path / "classify.log").open("wb")
    proc: subprocess.Popen[bytes] | None = None
    try:
        await agg.wait_ready()
        ids = [f"k{i}" for i in range(POSTS)]
        when = [datetime.fromtimestamp((BASE_MS + i * STEP_MS) / 1000, UTC) for i in range(POSTS)]
        await produce_records(
            settings.kafka,
            settings.topics.posts,
            [(i.encode(), post_json(i, n, when[n]), None) for n, i in enumerate(ids)],
        )

        proc = subprocess.Popen(
            [sys.executable, "-m", "newswatch.cli.main", "classify", "--metrics-port", "0"],
            env=stage_env(
                settings.model_copy(update={"kafka": settings.kafka.model_copy(update=FAST_GROUPS)})
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        before = await read_topic(bootstrap, settings.topics.scored, lambda rs: len(rs) >= 40, timeout_s=120)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert len(before) >= 40, (tmp_path / "classify.log").read_text()[-3000:]
        # replay: a worker in a fresh group reads the posts topic from its start
        replay = settings.model_copy(
            update={"classify": settings.classify.model_copy(update={"group_id": f"replay-{unique}"})}
        )
        async with ClassifyWorker(replay, Metrics(), engine=engine):
            scored = await read_topic(
                bootstrap, settings.topics.scored, lambda rs: set(ids) <= set(scored_ids(rs)), timeout_s=120
            )
            consumed = 'newswatch_stream_messages_consumed_total{stage="aggregate"}'
            # what the aggregator reads: every scored record, or every pane row (a post scored just
            # before the kill may have no pane record yet: its batch's panes were not written)
            expected = len(scored) if aggregate_input == "scored" else len(await pane_events(settings, ids))
            await wait_until(  # the aggregator has consumed every record or row
                lambda: agg.metric(consumed) >= expected, 60, "the aggregator to catch up", interval_s=0.5
            )
            # a post far ahead in event time from each source (each feed holds the watermark)
            # closes every window of the posts above
            flush_at = datetime.fromtimestamp((BASE_MS + 120_000) / 1000, UTC)
            flushes = [f"flush{k}" for k in range(3)]  # post_json's three sources
            await produce_records(
                settings.kafka,
                settings.topics.posts,
                [(f.encode(), post_json(f, k, flush_at), None) for k, f in enumerate(flushes)],
            )
            final_scored = await read_topic(
                bootstrap,
                settings.topics.scored,
                lambda rs: set(flushes) <= set(scored_ids(rs)),
                timeout_s=60,
            )
        events = [ScoredPost.from_json(r.value) for r in final_scored if r.value is not None]
        # what the aggregator read: the scored records, or the pane rows
        read = events if aggregate_input == "scored" else await pane_events(settings, [*ids, *flushes])
        flush_events = {e.post.id: e for e in read if e.post.id in flushes}
        ref = reference([e for e in read if e.post.id not in flushes] + list(flush_events.values()))
        async with WindowReader(settings) as reader:
            wanted = set(ref.finals())
            await reader.until(lambda r: wanted <= set(r.finals()), 90)
            finals = reader.finals()
        scored_dups = sum(n - 1 for n in Counter(e.post.id for e in events).values())
        dup_records = sum(n - 1 for n in Counter(e.post.id for e in read).values())
        agg_dups = agg.metric('newswatch_stream_duplicates_total{stage="aggregate"}')
        late = agg.metric('newswatch_stream_late_events_total{stage="aggregate"}')
        assert agg.stop() == 0, "the aggregator stops cleanly on SIGTERM"
    finally:
        log.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if agg.proc and agg.proc.poll() is None:
            agg.stop(signal.SIGKILL)

    print(f"kill+replay: {len(events)} scored records for {POSTS + 3} posts: {dup_records} duplicates read")
    assert scored_dups >= len(before), "every post scored before the kill was scored again"
    assert dup_records > 0, "the aggregator read posts twice"
    assert ref.duplicates == dup_records and ref.late == 0 and late == 0
    assert agg_dups == dup_records, "the aggregator ignored exactly the duplicate records"
    assert wanted and set(finals) <= set(ref.windows)
    for ident, ref_window in ref.finals().items():
        stat = finals[ident]
        n = len(ref_window.scores)
        assert stat.count == n, (ident, stat.count, n)  # each post once, duplicates or not
        assert stat.mean_score == pytest.approx(sum(s for s, _, _ in ref_window.scores) / n, abs=1e-6)
        assert stat.negative_share == pytest.approx(sum(1 for *_, b in ref_window.scores if b) / n)
    totals = [s.count for i, s in finals.items() if i[0] == "global" and i[2].startswith("tumbling")]
    assert sum(totals) == POSTS, "the global tumbling windows count every post exactly once"
