"""Batched PyTorch inference over a Hugging Face sequence-classification model (imports torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from newswatch.models.text import hf_encode

__all__ = ["torch_logits"]


def torch_logits(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 64,
    device: str = "cpu",
    dtype: Any = None,
) -> np.ndarray:
    """Logits of ``texts`` (cleaned, truncated, length-sorted batches), in input order, as float32."""
    import torch

    enc = hf_encode(tokenizer, texts, max_length)["input_ids"]
    order = np.argsort([len(ids) for ids in enc], kind="stable")
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    pad = tokenizer.pad_token_id or 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(enc[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(enc[i])] = torch.tensor(enc[i])
                mask[row, : len(enc[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            if dtype is not None and device != "cpu":
                with torch.autocast(device_type=device, dtype=dtype):
                    logits = model(input_ids=ids, attention_mask=mask).logits
            else:
                logits = model(input_ids=ids, attention_mask=mask).logits
            out[idx] = logits.float().cpu().numpy()
    return out
