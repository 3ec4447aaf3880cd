"""Evaluation of an engine on the public validation splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from newswatch.models.data import load_split
from newswatch.models.engine import ClassifierEngine
from newswatch.models.scoring import score_task

__all__ = ["evaluate_engine", "validation_logits"]


def validation_logits(
    engine: ClassifierEngine, data_dir: Path, limit: int | None = None
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Per task: the head's logits on the validation texts and the true labels."""
    nt = len(engine.topics)
    out: dict[str, tuple[np.ndarray, list[int]]] = {}
    for task in ("topic", "sentiment"):
        data = load_split(data_dir, task, "valid", limit)
        logits = engine.logits(data.texts)
        out[task] = (logits[:, :nt] if task == "topic" else logits[:, nt:], data.labels)
    return out


def evaluate_engine(engine: ClassifierEngine, data_dir: Path, limit: int | None = None) -> dict[str, Any]:
    """Full figures (accuracy, macro/weighted F1, per class, confusion) of both tasks."""
    names = {"topic": list(engine.topics), "sentiment": list(engine.info.sentiments)}
    return {
        task: score_task(labels, logits.argmax(axis=1).tolist(), names[task])
        for task, (logits, labels) in validation_logits(engine, data_dir, limit).items()
    }
