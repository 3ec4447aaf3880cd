"""Length-bucketed batching: the plan covers every text once, in order, and beats fixed chunks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newswatch.models.batching import plan_batches


def _cost(lengths: list[int], plan: list[tuple[int, int]], overhead: int) -> int:
    return sum(overhead + (stop - start) * lengths[stop - 1] for start, stop in plan)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    lengths=st.lists(st.integers(2, 512), max_size=300).map(sorted),
    max_batch=st.integers(1, 80),
    overhead=st.integers(0, 5000),
)
def test_plan_covers_in_order_within_the_cap_and_costs_no_more_than_fixed_chunks(
    lengths: list[int], max_batch: int, overhead: int
) -> None:
    plan = plan_batches(lengths, max_batch, overhead)
    assert [i for start, stop in plan for i in range(start, stop)] == list(range(len(lengths)))
    assert all(0 < stop - start <= max_batch for start, stop in plan)
    fixed = [(s, min(s + max_batch, len(lengths))) for s in range(0, len(lengths), max_batch)]
    assert _cost(lengths, plan, overhead) <= _cost(lengths, fixed, overhead)


def test_a_long_tail_gets_its_own_pass_and_short_texts_share_one() -> None:
    lengths = [20] * 60 + [64] * 4
    assert plan_batches(lengths, 64, 128) == [(0, 60), (60, 64)]
    assert plan_batches(lengths, 64, 10**6) == [(0, 64)]  # a costly pass: one pass, padded


def test_rejects_a_zero_cap() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        plan_batches([3], 0, 10)
