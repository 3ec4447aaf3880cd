"""The window engine without a broker: reference equality, recovery from state, pruning, cardinality."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from newswatch.cli.aggregate import main as aggregate_main
from newswatch.demo.broker import free_port
from newswatch.io.schemas import ScoredPost, WindowStat
from newswatch.metrics import Metrics
from newswatch.settings.stream import AggregateSettings
from newswatch.stream.aggregate import export_window_metrics, window_specs
from newswatch.stream.windows import WindowEngine, WindowSpec
from tests.support.aggregate import BASE_MS, assert_matches, reference, scenario, scored
from tests.support.settings import GRACE_MS, HOPPING, TUMBLING_MS

SPECS = [WindowSpec.tumbling(TUMBLING_MS), *(WindowSpec.hopping(d, s) for d, s in HOPPING)]


def _engine(state: dict[str, dict[str, Any]] | None = None) -> tuple[WindowEngine, dict[str, dict[str, Any]]]:
    state = state if state is not None else {"panes": {}, "seen": {}, "meta": {}}
    return WindowEngine(SPECS, GRACE_MS, panes=state["panes"], seen=state["seen"], meta=state["meta"]), state


def _run(engine: WindowEngine, events: list[ScoredPost | bytes], out: dict[Any, WindowStat]) -> None:
    for i, ev in enumerate(events):
        if isinstance(ev, bytes):
            continue
        engine.add(ev)
        if i % 17 == 0:  # emit now and then, as the timer does
            for s in engine.collect():
                out[(s.kind, s.key, s.window, s.start_ms)] = s
            engine.commit()
    for s in engine.collect():
        out[(s.kind, s.key, s.window, s.start_ms)] = s
    engine.commit()


def _random_events(seed: int, n: int = 400) -> list[ScoredPost | bytes]:
    rng = random.Random(seed)
    events: list[ScoredPost | bytes] = []
    for i in range(n):
        if events and rng.random() < 0.1:  # redelivery: an earlier record again, unchanged
            events.append(events[rng.randrange(max(0, len(events) - 30), len(events))])
            continue
        ts = BASE_MS + i * 300 + rng.randint(-4_000, 4_000)  # out of order, mostly within grace
        if rng.random() < 0.03:
            ts -= 20_000  # late
        events.append(
            scored(
                f"p{i}",
                ts,
                round(rng.uniform(-1, 1), 3),
                topic=rng.choice(["earnings", "macro"]),
                entities=tuple(rng.sample(["$A", "$B", "$C", "$D"], rng.randint(0, 2))),
                source=rng.choice(["wire", "social", "blog"]),
            )
        )
    for source in ("wire", "social", "blog"):  # each feed holds the watermark: flush them all
        events.append(scored("flush", BASE_MS + n * 300 + 120_000, 0.0, entities=(), source=source))
    return events


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_engine_finals_equal_reference(seed: int) -> None:
    events = _random_events(seed)
    ref = reference(events)
    assert ref.late > 0 and ref.duplicates > 0
    engine, _ = _engine()
    out: dict[Any, WindowStat] = {}
    _run(engine, events, out)
    finals = {i: s for i, s in out.items() if s.final}
    assert set(ref.finals()) == set(finals)
    for ident, ref_window in ref.finals().items():
        assert_matches(finals[ident], ref_window)


def test_engine_recovers_from_its_state_mappings() -> None:
    """A new engine on the same state (as after a changelog recovery) continues exactly."""
    events = scenario()
    ref = reference(events)
    engine, state = _engine()
    out: dict[Any, WindowStat] = {}
    _run(engine, events[:150], out)
    restarted, _ = _engine(state)  # indexes rebuilt from the mappings
    _run(restarted, events[150:], out)
    finals = {i: s for i, s in out.items() if s.final}
    assert set(finals) == set(ref.finals())
    for ident, ref_window in ref.finals().items():
        assert_matches(finals[ident], ref_window)


def test_restart_from_state_written_between_emits_keeps_the_watermark() -> None:
    """The aggregator writes its state (and acks) more often than it emits: the watermark is
    written with it (``checkpoint``), so a restart there still finds the same events late."""
    events = scenario()
    ref = reference(events)
    split = next(i for i, e in enumerate(events) if isinstance(e, ScoredPost) and e.post.id == "late150")
    engine, state = _engine()
    out: dict[Any, WindowStat] = {}
    _run(engine, events[:100], out)  # the last emit: watermark ~40 s after the base
    for ev in events[100:split]:  # ~60 s: late150 (44 s) is now more than the grace behind
        if isinstance(ev, ScoredPost):
            engine.add(ev)
    engine.checkpoint()  # a state flush without an emit, then a stop
    restarted, _ = _engine(state)
    assert restarted.watermark == engine.watermark
    _run(restarted, events[split:], out)
    finals = {i: s for i, s in out.items() if s.final}
    assert set(finals) == set(ref.finals())
    for ident, ref_window in ref.finals().items():
        assert_matches(finals[ident], ref_window)


def test_windows_changed_before_a_rebalance_are_still_emitted() -> None:
    """faust can hand records over before its rebalance signal; the aggregator then writes the
    state and rebuilds the engine's indexes (``checkpoint``, ``reset_index``): the windows those
    records changed must still be emitted."""
    eng, _ = _engine()
    eng.add(scored("a", BASE_MS + 1_000, -0.5, entities=("$AAPL",)))
    eng.checkpoint()
    eng.reset_index()
    updates = {(w.kind, w.key) for w in eng.collect() if not w.final}
    assert {("entity", "$AAPL"), ("global", "all")} <= updates


def test_updates_of_a_shape_come_at_most_updates_per_step_times_per_step() -> None:
    """Updates of in-progress windows are throttled per shape; changes made meanwhile are kept
    for the next due update, and finals are not throttled."""
    now = [0.0]
    eng = WindowEngine(
        [WindowSpec.tumbling(10_000)], 0, panes={}, seen={}, meta={}, updates_per_step=2, clock=lambda: now[0]
    )
    eng.add(scored("a", BASE_MS + 1_000, -0.5, entities=("$A",)))
    assert ("entity", "$A") in {(w.kind, w.key) for w in eng.collect() if not w.final}
    now[0] = 1.0  # 1 s later: the shape's next update is due at 5 s (a step of 10 s, twice per step)
    eng.add(scored("b", BASE_MS + 2_000, -0.5, entities=("$B",)))
    assert eng.collect() == []
    now[0] = 5.0
    updates = {(w.kind, w.key): w.count for w in eng.collect() if not w.final}
    assert updates[("entity", "$B")] == 1 and updates[("global", "all")] == 2
    eng.add(scored("d", BASE_MS + 3_000, 0.2, entities=("$D",)))
    assert eng.collect() == []  # not due yet
    assert ("entity", "$D") in {(w.kind, w.key) for w in eng.collect(all_updates=True)}  # before a stop
    now[0] = 6.0
    eng.add(scored("c", BASE_MS + 25_000, 0.1, entities=("$C",)))  # closes [0, 10 s) at once
    finals = {(w.kind, w.key) for w in eng.collect() if w.final}
    assert ("entity", "$A") in finals and ("entity", "$B") in finals


def test_updates_are_coalesced_and_never_final_too_early() -> None:
    engine, _ = _engine()
    for i in range(50):
        engine.add(scored(f"p{i}", BASE_MS + i * 10, -0.5))
    stats = engine.collect()
    engine.commit()
    # 50 posts in one pane: one update per key and window shape, none final yet
    assert not any(s.final for s in stats)
    assert len(stats) == 4 * len(SPECS)  # topic, entity, source, global
    assert {s.count for s in stats} == {50}
    assert engine.collect() == []  # nothing changed since


def test_state_is_pruned_behind_the_watermark() -> None:
    engine, state = _engine()
    for i in range(2_000):
        engine.add(scored(f"p{i}", BASE_MS + i * 1_000, 0.1, entities=(f"$T{i % 7}",)))
        if i % 50 == 0:
            engine.collect()
            engine.commit()
    engine.collect()
    engine.commit()
    # 2,000 s of events; only the last grace + 2 x longest window of panes and grace of ids stay
    panes_kept = {int(k.split("|")[1]) for k in state["panes"]}
    assert min(panes_kept) >= BASE_MS + 2_000_000 - GRACE_MS - 2 * 30_000 - 2 * TUMBLING_MS
    assert len(state["seen"]) <= (GRACE_MS + 2 * TUMBLING_MS) // 1_000
    assert engine.state_sizes["indexed_panes"] == len(state["panes"])
    restarted, _ = _engine(state)  # the index rebuilt from the recovered panes lists the same
    restarted.collect()
    assert restarted.state_sizes["indexed_panes"] == len(state["panes"])


def test_window_names_and_shapes() -> None:
    specs = window_specs(AggregateSettings())
    assert [s.name for s in specs] == ["tumbling_60000", "hopping_300000_60000", "hopping_3600000_60000"]
    assert list(WindowSpec.tumbling(60_000).starts_containing(61_000)) == [60_000]
    assert list(WindowSpec.hopping(300_000, 60_000).starts_containing(61_000)) == [
        -180_000,
        -120_000,
        -60_000,
        0,
        60_000,
    ]
    with pytest.raises(ValueError):
        WindowSpec.hopping(60_000, 120_000)


@pytest.mark.slow
def test_cardinality_attack_keeps_entity_series_bounded() -> None:
    """100k distinct tickers and sources through the engine and the metrics export: series stay <= top-K."""
    metrics = Metrics(CollectorRegistry(), top_k_entities=20)
    engine = WindowEngine([WindowSpec.tumbling(60_000)], 120_000, panes={}, seen={}, meta={})
    started = time.perf_counter()
    for i in range(100_000):
        engine.add(scored(f"p{i}", BASE_MS + i * 10, -0.5, entities=(f"$Z{i}",), source=f"src{i}"))
        if i % 10_000 == 9_999:
            export_window_metrics(metrics, engine.collect())
            engine.commit()
    export_window_metrics(metrics, engine.collect())
    engine.commit()
    elapsed = time.perf_counter() - started
    registry = metrics.registry
    for family in registry.collect():
        if family.name.startswith("newswatch_stream_window"):
            by_kind: dict[tuple[str, str], int] = {}
            for sample in family.samples:
                k = (sample.labels["kind"], sample.labels["window"])
                by_kind[k] = by_kind.get(k, 0) + 1
            for (kind, _window), n in by_kind.items():
                if kind in ("entity", "source"):
                    assert n <= 20
    assert metrics.series_count(["newswatch_stream_window_posts"]) <= (20 + 20) + 2
    # state is bounded by time, not by the number of keys: 1,000 s of events, ~300 s kept
    sizes = engine.state_sizes
    assert sizes["seen"] <= 19_000 and sizes["panes"] <= 2 * 31_000 + 20, sizes
    assert sizes["indexed_panes"] == sizes["panes"], sizes  # the per-key index is pruned with them
    print(f"100k distinct tickers: {elapsed:.1f} s")


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert aggregate_main(["--metrics-port", "70000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--metrics-port 70000" in err[0]
    port = free_port()
    # a free metrics port: this is about Kafka, and the default one may be in use by another stage
    assert aggregate_main(["--bootstrap-servers", f"127.0.0.1:{port}", "--metrics-port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach Kafka" in err[0] and "Traceback" not in err[0]


def test_watermark_waits_for_a_partition_read_behind() -> None:
    """A backlog read unevenly across partitions makes no event late; a silent partition stops holding."""
    now = [0.0]
    engine = WindowEngine(SPECS, GRACE_MS, panes={}, seen={}, meta={}, idle_ms=5_000, clock=lambda: now[0])
    engine.assign([0, 1])
    # partition 0 delivers 60 s of events before partition 1 delivers anything
    for i in range(60):
        assert engine.add(scored(f"a{i}", BASE_MS + i * 1_000, 0.1), partition=0) == "added"
    assert engine.watermark is None  # partition 1 may still hold older events
    for i in range(60):
        assert engine.add(scored(f"b{i}", BASE_MS + i * 1_000, 0.1), partition=1) == "added"
    assert engine.watermark == BASE_MS + 59_000
    # partition 1 goes quiet; partition 0 moves on: the watermark follows once 1 is idle
    now[0] = 1.0
    engine.add(scored("a-next", BASE_MS + 120_000, 0.1), partition=0)
    assert engine.watermark == BASE_MS + 59_000
    now[0] = 7.0
    engine.add(scored("a-later", BASE_MS + 121_000, 0.1), partition=0)
    assert engine.watermark == BASE_MS + 121_000
    assert engine.add(scored("b-old", BASE_MS + 100_000, 0.1), partition=1) == "late"
    finals = [
        s
        for s in engine.collect()
        if s.final and s.kind == "global" and s.window == f"tumbling_{TUMBLING_MS}"
    ]
    assert [s.count for s in finals[:6]] == [20] * 6


def test_fast_record_serialisation_matches_the_schema() -> None:
    engine, _ = _engine()
    for i in range(10):
        engine.add(scored(f"p{i}", BASE_MS + i * 4_000, -0.1 * i, text="ünïcode " * 50))
    stats = engine.collect()
    assert stats
    for s in stats:
        deep = {**dataclasses.asdict(s), "examples": list(s.examples)}  # the deep-copy reference
        assert s.to_json() == json.dumps(deep, ensure_ascii=False, separators=(",", ":")).encode()
        assert WindowStat.from_json(s.to_json()) == s
