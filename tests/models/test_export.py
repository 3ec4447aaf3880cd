"""ONNX export: parity with PyTorch, refusal of variants that lose accuracy, both backends agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from newswatch.models.artifacts import onnx_path
from newswatch.models.errors import ExportError


@pytest.fixture(scope="module")
def exported(trained_tiny: Path, data_dir: Path) -> dict:
    from newswatch.models.export import export_model

    return export_model(trained_tiny, data_dir, variants=("fp32", "int8"), limit=200)


pytestmark = pytest.mark.slow  # training/export of a tiny model: ~20-60 s here


def test_fp32_graph_matches_pytorch(exported: dict, trained_tiny: Path) -> None:
    fp32 = exported["fp32"]
    assert fp32["written"] and onnx_path(trained_tiny, "fp32").is_file()
    for task in ("topic", "sentiment"):
        assert fp32[task]["agreement"] >= 0.99
        assert abs(fp32[task]["accuracy_drop"]) <= 0.01


def test_int8_obeys_the_one_point_rule(exported: dict, trained_tiny: Path) -> None:
    int8 = exported["int8"]
    drops = [int8[t]["accuracy_drop"] for t in ("topic", "sentiment")]
    assert int8["written"] == (max(drops) <= 0.01 + 1e-9)
    assert onnx_path(trained_tiny, "int8").is_file() == int8["written"]
    metrics = json.loads((trained_tiny / "metrics.json").read_text())
    assert metrics["parity"]["fp32"]["written"] is True


def test_export_refuses_variants_that_lose_accuracy(
    trained_tiny: Path, data_dir: Path, tmp_path: Path
) -> None:
    """With a threshold no variant can meet, nothing is written and the error says why."""
    import shutil

    from newswatch.models.export import export_model

    model = tmp_path / "m"
    shutil.copytree(trained_tiny, model, ignore=shutil.ignore_patterns("onnx"))
    with pytest.raises(ExportError, match="no variant written"):
        export_model(model, data_dir, variants=("fp32",), limit=50, max_drop=-0.5)
    assert not onnx_path(model, "fp32").exists()


def test_torch_and_onnx_backends_agree(exported: dict, trained_tiny: Path) -> None:
    from newswatch.models.engine import ClassifierEngine
    from newswatch.settings.models import ModelSettings

    texts = ["Fed raises rates again", "Apple shares jump after earnings beat", "Oil slides", ""]
    with (
        ClassifierEngine.load(ModelSettings(dir=trained_tiny, backend="torch")) as t,
        ClassifierEngine.load(ModelSettings(dir=trained_tiny, variant="fp32")) as o,
    ):
        assert t.backend == "torch" and o.backend == "onnx"
        np.testing.assert_allclose(t.logits(texts[:3]), o.logits(texts[:3]), atol=1e-4)
        assert [p.topic for p in t.predict(texts)] == [p.topic for p in o.predict(texts)]
