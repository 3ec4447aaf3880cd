"""Window examples name their posts' entities: what links a topic's alert to its entity's across windows."""

from __future__ import annotations

from typing import Any

from newswatch.stream.windows import WindowEngine, WindowSpec
from tests.support.aggregate import BASE_MS, scored
from tests.support.settings import GRACE_MS


def test_examples_carry_entities_and_state_without_them_still_reads() -> None:
    state: dict[str, dict[str, Any]] = {"panes": {}, "seen": {}, "meta": {}}
    engine = WindowEngine([WindowSpec.tumbling(60_000)], GRACE_MS, **state)
    engine.add(scored("a", BASE_MS + 1_000, -0.9, topic="chips", entities=("$NVDA", "$AMD")))
    engine.add(scored("b", BASE_MS + 2_000, -0.5, topic="chips", entities=()))
    stats = {(s.kind, s.key): s for s in engine.collect()}
    topic = stats[("topic", "chips")]
    assert [(e["id"], e["entities"]) for e in topic.examples] == [("a", ["$NVDA", "$AMD"]), ("b", [])]
    # Pane state written before entities were kept (four fields per example) still yields examples.
    for pane in state["panes"].values():
        pane["ex"] = [e[:4] for e in pane["ex"]]
    engine.commit()
    old = WindowEngine([WindowSpec.tumbling(60_000)], GRACE_MS, **state)
    old.add(scored("c", BASE_MS + 3_000, 0.1, topic="chips"))
    [recovered] = [s for s in old.collect() if (s.kind, s.key) == ("topic", "chips")]
    assert [(e["id"], e["entities"]) for e in recovered.examples] == [("a", []), ("b", []), ("c", ["$AAPL"])]
