"""Smoke test of ``bench/detect.py``: a tiny run keeps its JSON contract (the full run is ``make bench``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "detect.py"


def _load():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_detect", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_bench_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load()
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
