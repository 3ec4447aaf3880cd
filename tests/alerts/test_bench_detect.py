"""Smoke test of ``bench/detect.py``: a tiny run keeps its JSON contract (the full run is ``make bench``)."""

from __future__ import annotations

import json

import pytest

from tests.support.bench import load_bench


def test_bench_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("detect")
    assert bench.STOCKNET.is_file(), (
        f"stocknet data not found at {bench.STOCKNET} (../shared/data beside the repo)"
    )
    assert bench.main(["--keys", "2", "--days", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["default"] in out["detectors"]
    assert set(out["baselines"]) == {"fixed_threshold", "three_sigma"}
    for result in [*out["detectors"].values(), *out["baselines"].values()]:
        assert {"precision", "recall", "f1", "median_delay_s"} <= set(result)
        assert 0.0 <= result["f1"] <= 1.0
        assert set(result["by_type"]) == {"spike", "ramp", "level_shift", "negative_flip"}
        assert all(
            {"precision", "recall", "f1", "median_delay_s"} <= set(t) for t in result["by_type"].values()
        )
    assert out["setup"]["incidents"] > 0
