"""Training: the real command on a few hundred rows and a handful of steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from newswatch.models.artifacts import SENTIMENTS, read_model_info
from tests.support.models import like_trained_tiny

pytestmark = pytest.mark.slow  # training/export of a tiny model: ~20-60 s here


def test_train_writes_a_complete_model_directory(trained_tiny: Path) -> None:
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "labels.json",
        "meta.json",
        "metrics.json",
        "MODEL_CARD.md",
        "history.json",
    ):
        assert (trained_tiny / name).is_file(), name
    info = read_model_info(trained_tiny)
    assert len(info.topics) == 20 and info.topics[5] == "Earnings"
    assert info.sentiments == SENTIMENTS
    assert info.version == "tiny-test"
    cfg = json.loads((trained_tiny / "config.json").read_text())
    assert len(cfg["id2label"]) == 23


def test_train_metrics_and_card(trained_tiny: Path) -> None:
    metrics = json.loads((trained_tiny / "metrics.json").read_text())
    assert metrics["steps"] == 12
    assert metrics["history"] and metrics["history"][0]["epoch"] == 1
    fig = metrics["validation"]["torch-fp32"]
    for task, k in (("topic", 20), ("sentiment", 3)):
        assert 0.0 <= fig[task]["accuracy"] <= 1.0
        assert len(fig[task]["confusion"]) == k
        assert sum(map(sum, fig[task]["confusion"])) == fig[task]["n"] == 300
    card = (trained_tiny / "MODEL_CARD.md").read_text()
    assert "Hyper-parameters" in card and "confusion matrix" in card


def test_training_is_seeded(trained_tiny: Path, tiny_base: Path, data_dir: Path, tmp_path: Path) -> None:
    """Same seed, same data, same steps: the same loss."""
    from newswatch.models.train import train

    again = train(like_trained_tiny(tiny_base, data_dir, tmp_path / "m"))
    first = json.loads((trained_tiny / "metrics.json").read_text())
    assert again["history"][0]["train_loss"] == first["history"][0]["train_loss"]


def test_train_rejects_a_directory_that_is_not_a_model(
    tmp_path: Path, data_dir: Path, capsys: object
) -> None:
    from newswatch.cli.main import main

    code = main(["train", "--base", str(tmp_path), "--data", str(data_dir), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "not a Hugging Face model directory" in err and "Traceback" not in err


def test_learning_happens(tiny_base: Path, data_dir: Path, tmp_path: Path) -> None:
    """Single-task (sentiment) training: the epoch loss goes down."""
    from newswatch.models.train import TrainConfig, train

    m = train(
        TrainConfig(
            base=tiny_base,
            data_dir=data_dir,
            out=tmp_path / "m",
            limit=300,
            epochs=3,
            batch_size=16,
            lr=2e-3,
            tasks="sentiment",
            patience=5,
        )
    )
    losses = [h["train_loss"] for h in m["history"]]
    assert losses[-1] < losses[0]


def test_class_weights_favour_rare_classes_and_average_one() -> None:
    from newswatch.models.train import class_weights

    labels = [0] * 90 + [1] * 9 + [2] * 1
    w = class_weights(labels, 4, 0.5)  # class 3 never occurs
    assert w[0] < w[1] < w[2] == w[3]
    assert abs(sum(w[y] for y in labels) / len(labels) - 1.0) < 1e-9
    assert class_weights(labels, 4, 0.0) == [1.0, 1.0, 1.0, 1.0]


def test_class_weighted_training_changes_the_loss(
    trained_tiny: Path, tiny_base: Path, data_dir: Path, tmp_path: Path
) -> None:
    """``--class-weight-power`` reaches the loss: same seed and steps, another first-epoch loss."""
    from newswatch.models.train import train

    weighted = train(like_trained_tiny(tiny_base, data_dir, tmp_path / "w", class_weight_power=0.5))
    plain = json.loads((trained_tiny / "metrics.json").read_text())
    assert weighted["history"][0]["train_loss"] != plain["history"][0]["train_loss"]
