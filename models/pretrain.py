"""Adaptive pre-training: more masked-language-model steps on finance texts before fine-tuning.

``newswatch pretrain`` continues a base encoder's masked-LM training on the kind of text the
classifiers will label: the texts of the train splits less the tuning hold-out (their labels
are not read) and, optionally, unlabelled files such as the StockNet tweets (task- and
domain-adaptive pre-training, Gururangan et al. 2020). Validation texts are never read, and
transfer texts that equal a labelled text are dropped, as for distillation.

The output is a base directory like the input, for ``newswatch train --base DIR``: the
encoder with its pooler (an ``AutoModel``) and the tokenizer; the masked-LM head is only
scaffolding and is not written. The head comes from the base when it has one, else it starts
from a fresh init tied to the word embeddings. ``pretrain.json`` records the run, with the
masked-LM loss on the hold-out texts before and after each epoch.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from newswatch.models.data import labelled_texts, load_split, load_transfer_texts, split_holdout
from newswatch.models.errors import ModelError, ModelNotFoundError
from newswatch.models.optim import adamw_warmup_linear, bucketed_batches
from newswatch.models.text import hf_encode

__all__ = ["PretrainConfig", "mask_tokens", "pretrain", "pretrain_texts"]

log = logging.getLogger(__name__)

IGNORE = -100  # label of a position the loss skips


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters and paths of one adaptive pre-training run.

    The one declaration of the defaults: ``newswatch pretrain``'s options take theirs from
    these fields (an option left out keeps the field's default).
    """

    base: Path
    data_dir: Path
    out: Path
    transfer: tuple[str, ...] = ()  # files of unlabelled texts (CSV ``text`` column or JSON lines)
    transfer_limit: int | None = None  # random sample of that many transfer texts (None = all)
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    mask_prob: float = 0.15
    max_length: int = 64
    holdout: float = 0.05  # the slice ``newswatch train --holdout`` keeps for tuning: never trained on
    seed: int = 13
    threads: int = 0
    limit: int | None = None  # rows per task (tests, smoke runs)
    max_steps: int | None = None
    freeze_embeddings: bool = True  # as in ``newswatch train``; the tied output layer keeps them too
    log_every: int = 200  # a log line every N steps (the progress bar shows only on a terminal)


def pretrain_texts(cfg: PretrainConfig) -> tuple[list[str], list[str]]:
    """(training texts, hold-out texts): train splits less the hold-out, then the transfer texts.

    The hold-out is the one ``newswatch train`` draws with the same ``holdout`` and ``seed``, so
    a model fine-tuned from the output is still selected on texts it has never seen.
    """
    texts: list[str] = []
    hold: list[str] = []
    for task in ("topic", "sentiment"):
        tr, ho = split_holdout(load_split(cfg.data_dir, task, "train", cfg.limit), cfg.holdout, cfg.seed)
        texts.extend(tr.texts)
        hold.extend(ho.texts)
    if cfg.transfer:
        labelled = labelled_texts(cfg.data_dir)
        texts.extend(
            load_transfer_texts([Path(p) for p in cfg.transfer], labelled, cfg.transfer_limit, cfg.seed)
        )
    return list(dict.fromkeys(texts)), hold


def mask_tokens(
    ids: Any, special: Any, mask_id: int, vocab_size: int, prob: float, generator: Any
) -> tuple[Any, Any]:
    """BERT's masking: ``prob`` of the ordinary tokens are chosen; of those 80 % become
    ``mask_id``, 10 % a random token, 10 % stay. Returns (inputs, labels); labels are
    :data:`IGNORE` where nothing was chosen. ``special`` marks padding and special tokens.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> ids = torch.arange(10, 30).reshape(2, 10)
    >>> special = torch.zeros_like(ids, dtype=torch.bool); special[:, 0] = True
    >>> inputs, labels = mask_tokens(ids, special, 3, 100, 0.5, g)
    >>> bool((labels[:, 0] == IGNORE).all()), bool(((labels == IGNORE) | (labels == ids)).all())
    (True, True)
    """
    import torch

    chosen = (torch.rand(ids.shape, generator=generator) < prob) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    roll = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = torch.randint(vocab_size, ids.shape, generator=generator)[swap]
    return inputs, labels


def _mlm_head(model: Any) -> Any | None:
    """The module mapping hidden states to vocabulary logits (BERT ``cls``, RoBERTa ``lm_head``)."""
    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if head is not None:
            return head
    return None


def _mlm_loss(model: Any, inputs: Any, mask: Any, labels: Any) -> Any:
    """Cross-entropy of the masked positions; the vocabulary layer runs on those positions only."""
    import torch

    head = _mlm_head(model)
    if head is None:  # another architecture: its own forward (logits at every position)
        return model(input_ids=inputs, attention_mask=mask, labels=labels).loss
    hidden = model.base_model(input_ids=inputs, attention_mask=mask).last_hidden_state
    picked = labels != IGNORE
    return torch.nn.functional.cross_entropy(head(hidden[picked]), labels[picked])


class _Batches:
    """Padded, length-bucketed batches of token ids with their special-token masks."""

    def __init__(self, tokenizer: Any, texts: list[str], max_length: int) -> None:
        enc = hf_encode(tokenizer, texts, max_length, return_special_tokens_mask=True)
        self.ids: list[list[int]] = enc["input_ids"]
        self.special: list[list[int]] = enc["special_tokens_mask"]
        self.pad = tokenizer.pad_token_id or 0
        self.lengths = [len(x) for x in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def tensors(self, rows: list[int]) -> tuple[Any, Any, Any]:
        """(ids, attention mask, special-or-padding mask) of ``rows``."""
        import torch

        width = max(len(self.ids[i]) for i in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        special = torch.ones((len(rows), width), dtype=torch.bool)
        for r, i in enumerate(rows):
            n = len(self.ids[i])
            ids[r, :n] = torch.tensor(self.ids[i])
            att[r, :n] = 1
            special[r, :n] = torch.tensor(self.special[i], dtype=torch.bool)
        return ids, att, special


def _holdout_loss(model: Any, data: _Batches, cfg: PretrainConfig, mask_id: int, vocab: int) -> float:
    """Masked-LM loss on the hold-out texts, with the same seeded masks at every call."""
    import torch

    if not len(data):
        return float("nan")
    model.eval()
    g = torch.Generator().manual_seed(cfg.seed)
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data), 64):
            ids, att, special = data.tensors(list(range(start, min(start + 64, len(data)))))
            inputs, labels = mask_tokens(ids, special, mask_id, vocab, cfg.mask_prob, g)
            k = int((labels != IGNORE).sum())
            if k:
                total += float(_mlm_loss(model, inputs, att, labels)) * k
                n += k
    model.train()
    return total / n if n else float("nan")


def _save_encoder(mlm: Any, cfg: PretrainConfig, tokenizer: Any) -> None:
    """Write the trained encoder into the base's own ``AutoModel`` (pooler kept) with the tokenizer."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(cfg.base))
    result = encoder.load_state_dict(mlm.base_model.state_dict(), strict=False)
    stray = [k for k in result.missing_keys if not k.startswith("pooler.")]
    if stray or result.unexpected_keys:
        raise ModelError(
            f"--base {cfg.base}: the masked-LM encoder does not match AutoModel "
            f"(missing {stray[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    encoder.save_pretrained(str(cfg.out), safe_serialization=True)
    tokenizer.save_pretrained(str(cfg.out))


def pretrain(cfg: PretrainConfig, progress: bool | None = None) -> dict[str, Any]:
    """Continue masked-LM training of ``cfg.base`` and write the adapted base to ``cfg.out``.

    Returns the record written to ``<out>/pretrain.json``.
    """
    try:
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelNotFoundError(
            "pre-training needs the train extra: pip install 'newswatch[train]'"
        ) from exc
    from rich.progress import Progress

    if not (Path(cfg.base) / "config.json").is_file():
        raise ModelNotFoundError(f"--base {cfg.base} is not a Hugging Face model directory (no config.json)")
    if not 0.0 < cfg.mask_prob < 1.0:
        raise ModelError(f"--mask-prob must be between 0 and 1, got {cfg.mask_prob}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    texts, hold = pretrain_texts(cfg)
    tokenizer = AutoTokenizer.from_pretrained(str(cfg.base))
    if tokenizer.mask_token_id is None:
        raise ModelError(f"--base {cfg.base}: its tokenizer has no mask token, so it cannot be pre-trained")
    model = AutoModelForMaskedLM.from_pretrained(str(cfg.base))
    model.tie_weights()
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    vocab = int(model.config.vocab_size)
    train_data, hold_data = (
        _Batches(tokenizer, texts, cfg.max_length),
        _Batches(tokenizer, hold, cfg.max_length),
    )
    log.info("pretrain: %d texts, %d hold-out texts", len(train_data), len(hold_data))

    steps_per_epoch = (len(train_data) + cfg.batch_size - 1) // cfg.batch_size
    total = (
        steps_per_epoch * cfg.epochs
        if cfg.max_steps is None
        else min(steps_per_epoch * cfg.epochs, cfg.max_steps)
    )
    opt, sched, trainable = adamw_warmup_linear(model, cfg.lr, cfg.weight_decay, cfg.warmup_ratio, total)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    history: list[dict[str, Any]] = [
        {
            "epoch": 0,
            "holdout_mlm_loss": round(
                _holdout_loss(model, hold_data, cfg, tokenizer.mask_token_id, vocab), 4
            ),
        }
    ]
    step = 0
    started = time.monotonic()
    show = sys.stderr.isatty() if progress is None else progress
    model.train()
    with Progress(disable=not show, transient=False) as bar:
        job = bar.add_task("pre-training", total=total)
        for epoch in range(1, cfg.epochs + 1):
            running, seen = 0.0, 0
            for rows in bucketed_batches(train_data.lengths, cfg.batch_size, rng):
                if step >= total:
                    break
                ids, att, special = train_data.tensors(rows)
                inputs, labels = mask_tokens(ids, special, tokenizer.mask_token_id, vocab, cfg.mask_prob, gen)
                if not bool((labels != IGNORE).any()):
                    continue
                loss = _mlm_loss(model, inputs, att, labels)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                opt.step()
                sched.step()
                step += 1
                running += loss.item() * len(rows)
                seen += len(rows)
                bar.update(job, advance=1, description=f"pre-training e{epoch} loss {running / seen:.3f}")
                if step % cfg.log_every == 0:
                    rate = step / (time.monotonic() - started)
                    log.info(
                        "epoch %d step %d/%d loss %.4f %.2f steps/s", epoch, step, total, running / seen, rate
                    )
            entry = {
                "epoch": epoch,
                "step": step,
                "train_mlm_loss": round(running / max(1, seen), 4),
                "holdout_mlm_loss": round(
                    _holdout_loss(model, hold_data, cfg, tokenizer.mask_token_id, vocab), 4
                ),
            }
            history.append(entry)
            log.info("pretrain epoch %s", json.dumps(entry))
            if step >= total:
                break
    cfg.out.mkdir(parents=True, exist_ok=True)
    _save_encoder(model, cfg, tokenizer)
    record = {
        "base": str(cfg.base),
        "texts": len(train_data),
        "holdout_texts": len(hold_data),
        "steps": step,
        "seconds": round(time.monotonic() - started, 1),
        "history": history,
        "hyperparameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (cfg.out / "pretrain.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record
