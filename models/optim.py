"""What the training loops share (``train``, ``pretrain``): batch order, optimiser and schedule.

Torch is imported inside the functions that need it, as in the loops themselves.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["NO_DECAY", "adamw_warmup_linear", "bucketed_batches"]

#: Parameter-name fragments excluded from weight decay (biases and normalisation weights).
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort by length inside chunks of 50 batches, cut into batches, shuffle the batches.

    Batches of similar lengths waste little padding, and the order stays random.

    >>> sorted(len(b) for b in bucketed_batches([5, 1, 3, 2, 4], 2, random.Random(0)))
    [1, 2, 2]
    """
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(idx), chunk):
        part = sorted(idx[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def adamw_warmup_linear(
    model: Any, lr: float, weight_decay: float, warmup_ratio: float, total_steps: int
) -> tuple[Any, Any, list[Any]]:
    """(optimiser, scheduler, trainable parameters) for ``model``'s parameters that need a gradient.

    AdamW with ``weight_decay`` except on :data:`NO_DECAY` parameters; the learning rate rises
    linearly over the first ``warmup_ratio`` of ``total_steps`` (at least one step), then falls
    linearly to zero at ``total_steps``.
    """
    import torch

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for n, p in trainable if not any(k in n for k in NO_DECAY)],
            "weight_decay": weight_decay,
        },
        {"params": [p for n, p in trainable if any(k in n for k in NO_DECAY)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr)
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor), [p for _, p in trainable]
