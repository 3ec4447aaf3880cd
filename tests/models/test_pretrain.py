"""Adaptive pre-training: masking, the texts it reads, and the real command on a tiny base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from newswatch.cli.main import main
from newswatch.models.data import load_split, split_holdout
from newswatch.models.pretrain import IGNORE, PretrainConfig, mask_tokens, pretrain_texts


def test_mask_tokens_follows_bert_masking() -> None:
    import torch

    g = torch.Generator().manual_seed(7)
    ids = torch.randint(1000, 2000, (400, 50))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    special[:, 40:] = True  # padding
    inputs, labels = mask_tokens(ids, special, mask_id=103, vocab_size=30522, prob=0.15, generator=g)
    chosen = labels != IGNORE
    assert not chosen[special].any(), "special and padding positions are never chosen"
    assert torch.equal(labels[chosen], ids[chosen]), "labels are the original tokens"
    share = chosen[~special].float().mean().item()
    assert 0.14 < share < 0.16
    masked = (inputs == 103) & chosen
    kept = (inputs == ids) & chosen
    assert 0.77 < masked.sum().item() / chosen.sum().item() < 0.83
    assert 0.08 < kept.sum().item() / chosen.sum().item() < 0.12  # 10 % kept (+ random draws equal to the id)
    assert torch.equal(inputs[~chosen], ids[~chosen]), "positions not chosen are untouched"


def test_pretrain_texts_skip_the_holdout_and_every_labelled_text(data_dir: Path, tmp_path: Path) -> None:
    valid = load_split(data_dir, "sentiment", "valid").texts[:5]
    train = load_split(data_dir, "topic", "train").texts[:3]
    transfer = tmp_path / "extra.jsonl"
    lines = [*valid, *train, "Fresh unlabelled tweet about $XYZ rallying", "Another one on $ABC guidance"]
    transfer.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines), encoding="utf-8")
    cfg = PretrainConfig(
        base=Path("unused"), data_dir=data_dir, out=tmp_path / "out", transfer=(str(transfer),), limit=200
    )
    texts, hold = pretrain_texts(cfg)
    _, expected_hold = split_holdout(load_split(data_dir, "topic", "train", 200), 0.05, 13)
    assert set(expected_hold.texts) <= set(hold)
    assert not set(hold) & set(texts), "hold-out texts are never pre-trained on"
    assert not set(valid) & set(texts), "validation texts are never pre-trained on"
    assert "Fresh unlabelled tweet about $XYZ rallying" in texts
    assert len(texts) == len(set(texts))


@pytest.mark.slow
def test_pretrain_command_lowers_the_masked_lm_loss_and_writes_a_base(
    tiny_base: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    out = tmp_path / "adapted"
    code = main(
        [
            "pretrain", "--base", str(tiny_base), "--data", str(data_dir), "--out", str(out),
            "--limit", "300", "--epochs", "3", "--batch-size", "32", "--lr", "3e-2", "--threads", "2",
        ]
    )  # fmt: skip
    assert code == 0
    record = json.loads((out / "pretrain.json").read_text())
    before, after = record["history"][0]["holdout_mlm_loss"], record["history"][-1]["holdout_mlm_loss"]
    assert after < before - 0.3, (before, after)  # the same seeded masks both times: no noise
    assert "hold-out masked-LM loss" in capsys.readouterr().out
    base, adapted = AutoModel.from_pretrained(str(tiny_base)), AutoModel.from_pretrained(str(out))
    b, a = base.state_dict(), adapted.state_dict()
    assert set(a) == set(b), "the output is the base's own architecture, pooler included"
    assert torch.equal(a["pooler.dense.weight"], b["pooler.dense.weight"])
    assert torch.equal(a["embeddings.word_embeddings.weight"], b["embeddings.word_embeddings.weight"])
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(a[query], b[query]), "the encoder was trained"
    clf = AutoModelForSequenceClassification.from_pretrained(
        str(out), num_labels=23
    )  # as train --base loads it
    assert torch.equal(clf.bert.encoder.layer[0].attention.self.query.weight, a[query])
    assert torch.equal(clf.bert.pooler.dense.weight, a["pooler.dense.weight"])


def test_pretrain_rejects_a_base_that_is_not_a_model_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pretrain", "--base", str(tmp_path), "--out", str(tmp_path / "o"), "--limit", "10"]) == 2
    err = capsys.readouterr().err
    assert "is not a Hugging Face model directory" in err and "Traceback" not in err
