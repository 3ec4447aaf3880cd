"""The tiny training run of the models tests: one configuration for the fixture and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newswatch.models.train import TrainConfig

#: Rows per task, epochs, steps...: what ``trained_tiny`` trains with (keeps training tests fast).
TINY_TRAINING: dict[str, Any] = {
    "limit": 300,
    "epochs": 2,
    "max_steps": 12,
    "batch_size": 32,
    "lr": 1e-3,
    "version": "tiny-test",
}


def tiny_training_flags() -> list[str]:
    """:data:`TINY_TRAINING` as ``newswatch train`` flags."""
    return [arg for k, v in TINY_TRAINING.items() for arg in (f"--{k.replace('_', '-')}", str(v))]


def like_trained_tiny(base: Path, data_dir: Path, out: Path, **changes: Any) -> TrainConfig:
    """The configuration the ``trained_tiny`` fixture trains with, plus ``changes``."""
    from newswatch.models.train import TrainConfig

    return TrainConfig(base=base, data_dir=data_dir, out=out, **{**TINY_TRAINING, **changes})
