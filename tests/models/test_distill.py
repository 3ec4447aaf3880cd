"""Distillation: teachers' soft targets, the loss that follows them, and a distilled training run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support.models import like_trained_tiny


def test_distillation_loss_is_zero_on_agreement_and_grows_with_disagreement() -> None:
    import torch

    from newswatch.models.distill import distillation_loss

    teacher_logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    probs = torch.softmax(teacher_logits / 2.0, dim=-1)
    assert float(distillation_loss(teacher_logits, probs, 2.0)) == pytest.approx(0.0, abs=1e-6)
    near = float(distillation_loss(teacher_logits + torch.tensor([0.0, 0.5, 0.0]), probs, 2.0))
    far = float(distillation_loss(teacher_logits.flip(1), probs, 2.0))
    assert 0.0 < near < far


@pytest.fixture(scope="module")
def topic_only_teacher(tiny_base: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``--tasks topic`` model trained from the tiny base."""
    from newswatch.models.train import train

    out = tmp_path_factory.mktemp("topic-teacher") / "m"
    train(like_trained_tiny(tiny_base, data_dir, out, tasks="topic", seed=7))
    return out


@pytest.mark.slow
def test_teacher_targets_average_the_heads_each_teacher_covers(
    trained_tiny: Path, topic_only_teacher: Path, data_dir: Path
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from newswatch.models.data import load_split, load_topic_names
    from newswatch.models.distill import teacher_targets
    from newswatch.models.engine import softmax
    from newswatch.models.torch_infer import torch_logits

    topics = load_topic_names(data_dir)
    texts = load_split(data_dir, "sentiment", "valid", 40).texts
    seen: list[tuple[str, int]] = []
    targets = teacher_targets(
        [trained_tiny, topic_only_teacher],
        texts,
        topics,
        temperature=2.0,
        on_progress=lambda t, done, total: seen.append((t, done)),
        chunk=16,
    )
    assert targets.teachers == {
        str(trained_tiny): ("topic", "sentiment"),
        str(topic_only_teacher): ("topic",),
    }
    assert seen[-1] == (str(topic_only_teacher), 40) and len(seen) == 6  # 3 chunks per teacher

    def logits(model_dir: Path) -> np.ndarray:
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
        return torch_logits(model, AutoTokenizer.from_pretrained(str(model_dir)), texts, 64)

    both, topic_only = logits(trained_tiny), logits(topic_only_teacher)
    expected_topic = (softmax(both[:, :20], 2.0) + softmax(topic_only[:, :20], 2.0)) / 2
    assert targets.topic is not None and targets.sentiment is not None
    np.testing.assert_allclose(targets.topic, expected_topic, atol=1e-5)
    np.testing.assert_allclose(targets.sentiment, softmax(both[:, 20:], 2.0), atol=1e-5)  # one teacher
    np.testing.assert_allclose(targets.topic.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_distilled_training_follows_the_teacher(
    trained_tiny: Path, tiny_base: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Soft labels only (weight 1): the loss is the distance to the teacher and it goes down."""
    from newswatch.models.train import train

    cfg = like_trained_tiny(
        tiny_base,
        data_dir,
        tmp_path / "student",
        teachers=(str(trained_tiny),),
        distill_weight=1.0,
        epochs=3,
        max_steps=None,
        patience=5,
    )
    metrics = train(cfg)
    losses = [h["train_loss"] for h in metrics["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    meta = json.loads((tmp_path / "student" / "meta.json").read_text())
    assert meta["hyperparameters"]["teachers"] == [str(trained_tiny)]
    plain = json.loads((trained_tiny / "metrics.json").read_text())
    assert losses[0] != plain["history"][0]["train_loss"]


@pytest.mark.slow
def test_a_teacher_must_cover_the_student_task(
    topic_only_teacher: Path, tiny_base: Path, data_dir: Path, tmp_path: Path
) -> None:
    from newswatch.models.errors import ModelNotFoundError
    from newswatch.models.train import train

    cfg = like_trained_tiny(
        tiny_base, data_dir, tmp_path / "s", tasks="sentiment", teachers=(str(topic_only_teacher),)
    )
    with pytest.raises(ModelNotFoundError, match="no --teacher was trained for the sentiment task"):
        train(cfg)


def test_cli_refuses_a_teacher_without_weights(
    trained_tiny: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exported serving copy (ONNX, no PyTorch weights) cannot teach: exit 2, one clear line."""
    from newswatch.cli.main import main

    serving = tmp_path / "serving"
    shutil.copytree(trained_tiny, serving, ignore=shutil.ignore_patterns("model.safetensors"))
    args = ["train", "--base", str(trained_tiny), "--data", str(data_dir), "--out", str(tmp_path / "o")]
    code = main([*args, "--limit", "50", "--max-steps", "1", "--teacher", str(serving)])
    assert code == 2
    err = capsys.readouterr().err
    assert "has no PyTorch weights" in err and "Traceback" not in err


def test_cli_refuses_a_distill_weight_outside_0_1(
    trained_tiny: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from newswatch.cli.main import main

    args = ["train", "--base", str(trained_tiny), "--data", str(data_dir), "--out", str(tmp_path / "o")]
    code = main([*args, "--teacher", str(trained_tiny), "--distill-weight", "1.5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--distill-weight must be in [0, 1]" in err and "Traceback" not in err


def _write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_transfer_texts_drop_near_duplicates_and_every_labelled_text(data_dir: Path, tmp_path: Path) -> None:
    """Re-posts collapse to one text, and a validation text is never trained on, even unlabelled."""
    from newswatch.models.data import load_split, load_transfer_texts

    valid = load_split(data_dir, "sentiment", "valid", 5).texts
    texts = [
        "Shares of $ACME jump after the earnings beat https://t.co/abc",
        "RT @trader: shares of $ACME jump after the earnings beat… https://t.co/zzz",  # a retweet of it
        "Bond yields climb as the Fed signals more hikes",
        valid[0].split("https://")[0] + " https://t.co/other",  # a benchmark text with another link
        "   ",
    ]
    path = _write_jsonl(tmp_path / "t.jsonl", texts)
    kept = load_transfer_texts([path], valid, limit=None, seed=1)
    assert kept == [texts[0], texts[2]]
    sample = load_transfer_texts([path, path], [], limit=1, seed=1)
    assert len(sample) == 1 and sample == load_transfer_texts([path], [], limit=1, seed=1)


def test_transfer_without_texts_a_file_or_a_positive_limit_is_a_data_error(tmp_path: Path) -> None:
    from newswatch.models.data import load_transfer_texts
    from newswatch.models.errors import DataError

    path = _write_jsonl(tmp_path / "t.jsonl", ["same text", "Same text!"])
    with pytest.raises(DataError, match="no text left"):
        load_transfer_texts([path], ["same  text"], limit=None, seed=1)
    with pytest.raises(DataError, match=r"--transfer: .*does not exist"):
        load_transfer_texts([tmp_path / "missing.csv"], [], limit=None, seed=1)
    with pytest.raises(DataError, match="--transfer-limit must be at least 1"):
        load_transfer_texts([path], [], limit=0, seed=1)


@pytest.mark.slow
def test_transfer_texts_are_trained_on_with_the_teachers_labels(
    trained_tiny: Path, tiny_base: Path, data_dir: Path, tmp_path: Path
) -> None:
    """One epoch covers the labelled texts plus every kept transfer text; the meta records the file."""
    from newswatch.models.data import load_split, split_holdout
    from newswatch.models.train import train

    stream = data_dir / "stocknet_tweets" / "stocknet_tweets_2014_2016.csv"
    cfg = like_trained_tiny(
        tiny_base,
        data_dir,
        tmp_path / "student",
        teachers=(str(trained_tiny),),
        transfer=(str(stream),),
        transfer_limit=100,
        epochs=1,
        max_steps=None,
    )
    metrics = train(cfg)
    labelled = sum(
        len(split_holdout(load_split(data_dir, t, "train", 300), cfg.holdout, cfg.seed)[0].texts)
        for t in ("topic", "sentiment")
    )
    assert metrics["steps"] == -(-(labelled + 100) // cfg.batch_size)
    meta = json.loads((tmp_path / "student" / "meta.json").read_text())
    assert meta["hyperparameters"]["transfer"] == [str(stream)]


def test_cli_refuses_transfer_texts_without_a_teacher(
    trained_tiny: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from newswatch.cli.main import main

    texts = _write_jsonl(tmp_path / "t.jsonl", ["an unlabelled post"])
    args = ["train", "--base", str(trained_tiny), "--data", str(data_dir), "--out", str(tmp_path / "o")]
    assert main([*args, "--transfer", str(texts)]) == 2
    err = capsys.readouterr().err
    assert "pass at least one --teacher" in err and "Traceback" not in err
