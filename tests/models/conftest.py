"""Fixtures of the models tests: a tiny real BERT base, a model trained from it, its ONNX export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from newswatch.models.artifacts import base_model_dir, default_data_dir
from tests.support.models import tiny_training_flags

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared datasets (``../shared/data``)."""
    path = default_data_dir()
    assert (path / "twitter_financial_news_topic" / "topic_train.csv").is_file(), path
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local Hugging Face model directory: a 2-layer, 64-wide BERT with the MiniLM tokenizer.

    It stands for "any local HF model dir" (``--base DIR``) and keeps training tests fast.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-base")
    tok = AutoTokenizer.from_pretrained(str(base_model_dir()))
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def trained_tiny(tiny_base: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory trained from ``tiny_base`` through the real ``newswatch train`` command."""
    from newswatch.cli.main import main

    out = tmp_path_factory.mktemp("trained") / "model"
    code = main(
        [
            "train",
            "--base",
            str(tiny_base),
            "--data",
            str(data_dir),
            "--out",
            str(out),
            *tiny_training_flags(),
        ]
    )
    assert code == 0
    return out
