"""``newswatch train``/``pretrain``: hyper-parameters are declared once, in the config classes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from newswatch.cli.main import build_parser
from newswatch.cli.models import _config_fields
from newswatch.models.pretrain import PretrainConfig
from newswatch.models.train import TrainConfig


@pytest.mark.parametrize(("command", "config"), [("train", TrainConfig), ("pretrain", PretrainConfig)])
def test_options_left_out_keep_the_config_defaults(command: str, config: type) -> None:
    args = build_parser().parse_args([command, "--base", "b", "--data", "d", "--out", "o"])
    built = config(**_config_fields(args, config))
    assert built == config(base=Path("b"), data_dir=Path("d"), out=Path("o"))


def test_options_given_set_their_fields_and_help_shows_the_config_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["train", "--out", "o", "--epochs", "2", "--lr", "0.001", "--train-embeddings", "--teacher", "t1"]
    )
    cfg = TrainConfig(**_config_fields(args, TrainConfig))
    assert (cfg.epochs, cfg.lr, cfg.freeze_embeddings, cfg.teachers) == (2, 0.001, False, ("t1",))
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    for name in ("epochs", "holdout", "mask_prob", "lr"):
        assert f"default {defaults[name]}" in shown, name
