"""Knowledge distillation: soft targets from trained teachers and the loss that follows them.

A teacher is any model directory written by ``newswatch train`` (a larger encoder trained
with ``--base DIR``, a single-task model, or several of them). Each teacher scores every
training text, the topic texts and the sentiment texts alike, so the student's topic head
also learns from the sentiment texts and vice versa. A teacher trained with ``--tasks
topic`` or ``--tasks sentiment`` only speaks for that head; where several teachers cover a
head their temperature-softened probabilities are averaged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from newswatch.models.artifacts import read_model_info
from newswatch.models.engine import softmax
from newswatch.models.errors import ModelNotFoundError

__all__ = ["HEADS", "SoftTargets", "distillation_loss", "teacher_heads", "teacher_targets"]

HEADS = ("topic", "sentiment")


@dataclass(frozen=True)
class SoftTargets:
    """Averaged teacher probabilities per head (rows follow the texts); ``None``: no teacher covers it."""

    topic: np.ndarray | None
    sentiment: np.ndarray | None
    teachers: dict[str, tuple[str, ...]]  # teacher directory -> heads it spoke for


def teacher_heads(model_dir: Path, topics: Sequence[str]) -> tuple[str, ...]:
    """The heads ``model_dir`` was trained for, after checking it is a newswatch model with ``topics``."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file() or not (model_dir / "model.safetensors").is_file():
        raise ModelNotFoundError(
            f"--teacher {model_dir} has no PyTorch weights (config.json + model.safetensors); "
            "pass a directory written by `newswatch train`"
        )
    info = read_model_info(model_dir)
    if list(info.topics) != list(topics):
        raise ModelNotFoundError(f"--teacher {model_dir} has other topic labels than the training data")
    tasks = str(info.meta.get("tasks", "both"))
    return HEADS if tasks == "both" else (tasks,)


def teacher_targets(
    teachers: Sequence[Path],
    texts: Sequence[str],
    topics: Sequence[str],
    temperature: float,
    on_progress: Callable[[str, int, int], None] | None = None,
    chunk: int = 1024,
) -> SoftTargets:
    """Score ``texts`` with each teacher (PyTorch, CPU or CUDA) and average the softened heads.

    ``on_progress(teacher, done, total)`` is called after every ``chunk`` texts.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from newswatch.models.torch_infer import torch_logits

    nt = len(topics)
    sums: dict[str, np.ndarray | None] = dict.fromkeys(HEADS)
    counts = dict.fromkeys(HEADS, 0)
    covered = {str(t): teacher_heads(t, topics) for t in teachers}  # check them all before scoring
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for teacher in teachers:
        heads = covered[str(teacher)]
        info = read_model_info(teacher)
        tokenizer = AutoTokenizer.from_pretrained(str(teacher))
        model = AutoModelForSequenceClassification.from_pretrained(str(teacher)).to(device)
        parts: list[np.ndarray] = []
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            parts.append(torch_logits(model, tokenizer, part, info.max_length, device=device))
            if on_progress is not None:
                on_progress(str(teacher), start + len(part), len(texts))
        logits = np.concatenate(parts) if parts else np.zeros((0, nt + 3), dtype=np.float32)
        for head in heads:
            probs = softmax(logits[:, :nt] if head == "topic" else logits[:, nt:], temperature)
            prev = sums[head]
            sums[head] = probs if prev is None else prev + probs
            counts[head] += 1
        del model
    avg = {h: (None if s is None else (s / counts[h]).astype(np.float32)) for h, s in sums.items()}
    return SoftTargets(topic=avg["topic"], sentiment=avg["sentiment"], teachers=covered)


def distillation_loss(student_logits: Any, teacher_probs: Any, temperature: float) -> Any:
    """Summed ``T² · KL(teacher ‖ student)`` over the rows, both softened by ``temperature``.

    The ``T²`` factor keeps the gradient scale of the soft term independent of ``T``
    (Hinton et al., 2015), so ``--distill-weight`` means the same at any temperature.
    """
    import torch

    log_student = torch.log_softmax(student_logits / temperature, dim=-1)
    kl = torch.nn.functional.kl_div(log_student, teacher_probs, reduction="sum")
    return kl * temperature**2
