"""Multi-task fine-tuning: one encoder, a topic head and a sentiment head (imports torch lazily).

The network is a Hugging Face ``AutoModelForSequenceClassification`` with
``topics + 3`` outputs: the first ``len(topics)`` logits are the topic head, the last
three the sentiment head. Each training example is a topic *or* a sentiment example;
its loss is the cross-entropy over its own head only, so one model learns both tasks
and serving needs one forward pass per post. With ``teachers`` (distillation) every
example also follows the teachers' softened probabilities on both heads, and unlabelled
``transfer`` texts (only the teachers label them) widen what the student sees.
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

import numpy as np

from newswatch.models.artifacts import SENTIMENTS, write_model_info
from newswatch.models.data import (
    SENTIMENT,
    TOPIC,
    TRANSFER,
    Example,
    labelled_texts,
    load_split,
    load_topic_names,
    load_transfer_texts,
    split_holdout,
)
from newswatch.models.distill import HEADS, distillation_loss, teacher_targets
from newswatch.models.errors import ModelError, ModelNotFoundError
from newswatch.models.optim import adamw_warmup_linear, bucketed_batches
from newswatch.models.scoring import score_task
from newswatch.models.text import hf_encode

__all__ = ["TrainConfig", "class_weights", "evaluate_torch", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and paths of one training run.

    The one declaration of the defaults: ``newswatch train``'s options take theirs from
    these fields (an option left out keeps the field's default).
    """

    base: Path
    data_dir: Path
    out: Path
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 64
    seed: int = 13
    holdout: float = 0.1
    patience: int = 1
    limit: int | None = None  # rows per task and split (tests, smoke runs)
    max_steps: int | None = None  # stop after this many optimiser steps in total
    sentiment_weight: float = 1.0  # multi-task balance: weight of the sentiment loss
    class_weight_power: float = 0.0  # class c weighs count(c) ** -power in the loss (0 = none, 0.5 = sqrt)
    tasks: str = "both"  # "both" (shared encoder), "topic" or "sentiment" (single-task ablation)
    threads: int = 0
    freeze_embeddings: bool = True  # word embeddings stay as pre-trained: ~half the parameters, less work
    save_every: int = 0  # also write the current weights to <out>/latest every N steps (0 = never)
    teachers: tuple[str, ...] = ()  # model directories whose soft labels the student also learns from
    distill_weight: float = 0.5  # share of the loss given to the teachers' soft labels (0..1)
    temperature: float = 2.0  # softening of teacher and student probabilities in the distillation term
    transfer: tuple[str, ...] = ()  # files of unlabelled texts the teachers label for the student
    transfer_limit: int | None = None  # random sample of that many transfer texts (None = all)
    version: str | None = None
    log_every: int = 50


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(labels: list[int], n_classes: int, power: float) -> list[float]:
    """Per-class loss weights ``∝ count ** -power``, scaled so the average example weighs 1.

    ``power`` 0 gives all ones; 0.5 (square-root inverse frequency) lifts rare classes
    without letting a handful of examples dominate the loss. A class absent from
    ``labels`` gets the largest weight seen.

    >>> [round(w, 3) for w in class_weights([0, 0, 0, 1], 2, 1.0)]
    [0.667, 2.0]
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    raw = np.zeros(n_classes)
    raw[present] = counts[present] ** -power
    raw[~present] = raw[present].max() if present.any() else 1.0
    scale = counts.sum() / float((counts * raw).sum()) if counts.sum() else 1.0
    return [float(w) for w in raw * scale]


def evaluate_torch(
    model: Any,
    tokenizer: Any,
    texts: dict[str, list[str]],
    labels: dict[str, list[int]],
    topics: list[str],
    max_length: int,
) -> dict[str, Any]:
    """Figures of the PyTorch model on ``texts``/``labels`` keyed by task name."""
    from newswatch.models.torch_infer import torch_logits

    nt = len(topics)
    out: dict[str, Any] = {}
    for task, names in (("topic", topics), ("sentiment", list(SENTIMENTS))):
        if not texts.get(task):
            continue
        logits = torch_logits(model, tokenizer, texts[task], max_length)
        head = logits[:, :nt] if task == "topic" else logits[:, nt:]
        out[task] = score_task(labels[task], head.argmax(axis=1).tolist(), names)
    return out


def _selection_score(fig: dict[str, Any]) -> float:
    return float(np.mean([fig[t][m] for t in fig for m in ("accuracy", "macro_f1")]))


def _meta(cfg: TrainConfig, version: str, epoch: int) -> dict[str, Any]:
    return {
        "version": version,
        "base": str(cfg.base),
        "base_name": Path(cfg.base).name,
        "max_length": cfg.max_length,
        "best_epoch": epoch,
        "tasks": cfg.tasks,
        "hyperparameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _save(model: Any, tokenizer: Any, out: Path, topics: list[str], meta: dict[str, Any]) -> None:
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    write_model_info(out, topics, meta)


def _soft_targets(cfg: TrainConfig, train_ex: list[Example], topics: list[str], bar: Any) -> dict[str, Any]:
    """The teachers' softened probabilities of every training text, per head the student trains."""
    if not cfg.teachers:
        return {}
    import torch

    job = bar.add_task("teachers", total=len(train_ex) * len(cfg.teachers))
    done: dict[str, int] = {}

    def advance(teacher: str, n: int, _total: int) -> None:
        bar.advance(job, n - done.get(teacher, 0))
        done[teacher] = n

    targets = teacher_targets(
        [Path(t) for t in cfg.teachers], [e.text for e in train_ex], topics, cfg.temperature, advance
    )
    log.info("teachers %s", json.dumps(targets.teachers))
    heads = HEADS if cfg.tasks == "both" else (cfg.tasks,)
    soft = {h: getattr(targets, h) for h in heads if getattr(targets, h) is not None}
    if not soft:
        raise ModelNotFoundError(f"no --teacher was trained for the {cfg.tasks} task")
    return {h: torch.from_numpy(p) for h, p in soft.items()}


def train(cfg: TrainConfig, progress: bool | None = None) -> dict[str, Any]:
    """Fine-tune ``cfg.base`` on both tasks and write the model directory ``cfg.out``.

    Returns the metrics written to ``metrics.json``.
    """
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelNotFoundError("training needs the train extra: pip install 'newswatch[train]'") from exc
    from rich.progress import Progress

    if not (Path(cfg.base) / "config.json").is_file():
        raise ModelNotFoundError(f"--base {cfg.base} is not a Hugging Face model directory (no config.json)")
    if not 0.0 <= cfg.distill_weight <= 1.0 or cfg.temperature <= 0:
        raise ModelError(
            f"--distill-weight must be in [0, 1] and --temperature > 0, got {cfg.distill_weight} and "
            f"{cfg.temperature}"
        )
    if cfg.transfer and not cfg.teachers:
        raise ModelError("--transfer texts have no labels of their own: pass at least one --teacher")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_all(cfg.seed)
    topics = load_topic_names(cfg.data_dir)
    nt = len(topics)

    train_ex: list[Example] = []
    hold_texts: dict[str, list[str]] = {}
    hold_labels: dict[str, list[int]] = {}
    valid_texts: dict[str, list[str]] = {}
    valid_labels: dict[str, list[int]] = {}
    for task, tid in (("topic", TOPIC), ("sentiment", SENTIMENT)):
        if cfg.tasks not in ("both", task):
            continue
        full = load_split(cfg.data_dir, task, "train", cfg.limit)
        tr, ho = split_holdout(full, cfg.holdout, cfg.seed)
        train_ex.extend(tr.examples(tid))
        hold_texts[task], hold_labels[task] = ho.texts, ho.labels
        va = load_split(cfg.data_dir, task, "valid", cfg.limit)
        valid_texts[task], valid_labels[task] = va.texts, va.labels
    if cfg.transfer:
        labelled = labelled_texts(cfg.data_dir)
        extra = load_transfer_texts([Path(p) for p in cfg.transfer], labelled, cfg.transfer_limit, cfg.seed)
        log.info("transfer: %d unlabelled texts from %s", len(extra), ", ".join(cfg.transfer))
        train_ex.extend(Example(t, 0, TRANSFER) for t in extra)

    id2label = {i: f"topic/{n}" for i, n in enumerate(topics)}
    id2label.update({nt + j: f"sentiment/{s}" for j, s in enumerate(SENTIMENTS)})
    tokenizer = AutoTokenizer.from_pretrained(str(cfg.base))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(cfg.base),
        num_labels=nt + len(SENTIMENTS),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,
    )
    if cfg.freeze_embeddings:
        embeddings = model.get_input_embeddings()
        embeddings.weight.requires_grad_(False)
    enc = hf_encode(tokenizer, [e.text for e in train_ex], cfg.max_length)["input_ids"]
    lengths = [len(x) for x in enc]
    y = torch.tensor([e.label for e in train_ex])
    task_of = torch.tensor([e.task for e in train_ex])
    pad = tokenizer.pad_token_id or 0

    steps_per_epoch = (len(train_ex) + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    opt, sched, _ = adamw_warmup_linear(model, cfg.lr, cfg.weight_decay, cfg.warmup_ratio, total)

    def _weights(task: int, n: int) -> Any:
        if not cfg.class_weight_power:
            return None
        ys = [e.label for e in train_ex if e.task == task]  # transfer texts have no class
        return torch.tensor(class_weights(ys, n, cfg.class_weight_power), dtype=torch.float32)

    ce_topic = torch.nn.CrossEntropyLoss(weight=_weights(TOPIC, nt), reduction="sum")
    ce_sent = torch.nn.CrossEntropyLoss(weight=_weights(SENTIMENT, len(SENTIMENTS)), reduction="sum")
    rng = random.Random(cfg.seed)
    version = cfg.version or f"{Path(cfg.base).name}-mt-{dt.date.today():%Y.%m.%d}"
    history: list[dict[str, Any]] = []
    best = -1.0
    bad_epochs = 0
    step = 0
    started = time.monotonic()
    show = sys.stderr.isatty() if progress is None else progress
    with Progress(disable=not show, transient=False) as bar:
        soft = _soft_targets(cfg, train_ex, topics, bar)
        job = bar.add_task("training", total=total)
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            running, seen = 0.0, 0
            t0 = time.monotonic()
            for batch in bucketed_batches(lengths, cfg.batch_size, rng):
                if step >= total:
                    break
                width = max(lengths[i] for i in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, : lengths[i]] = torch.tensor(enc[i])
                    mask[row, : lengths[i]] = 1
                logits = model(input_ids=ids, attention_mask=mask).logits
                bt = torch.tensor(batch)
                yt, tt = y[bt], task_of[bt]
                loss = torch.zeros(())
                is_topic, is_sent = tt == TOPIC, tt == SENTIMENT
                if is_topic.any():
                    loss = loss + ce_topic(logits[is_topic, :nt], yt[is_topic])
                if is_sent.any():
                    loss = loss + cfg.sentiment_weight * ce_sent(logits[is_sent, nt:], yt[is_sent])
                if soft:
                    kd = torch.zeros(())
                    if "topic" in soft:
                        kd = kd + distillation_loss(logits[:, :nt], soft["topic"][bt], cfg.temperature)
                    if "sentiment" in soft:
                        kd = kd + cfg.sentiment_weight * distillation_loss(
                            logits[:, nt:], soft["sentiment"][bt], cfg.temperature
                        )
                    loss = (1.0 - cfg.distill_weight) * loss + cfg.distill_weight * kd
                loss = loss / len(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                running += float(loss.detach()) * len(batch)
                seen += len(batch)
                bar.advance(job)
                if cfg.save_every and step % cfg.save_every == 0:
                    _save(
                        model,
                        tokenizer,
                        cfg.out / "latest",
                        topics,
                        {**_meta(cfg, version, epoch), "step": step},
                    )
                if step % cfg.log_every == 0:
                    rate = seen / (time.monotonic() - t0)
                    log.info(
                        "epoch %d step %d/%d loss %.4f %.1f texts/s", epoch, step, total, running / seen, rate
                    )
            fig = evaluate_torch(model, tokenizer, hold_texts, hold_labels, topics, cfg.max_length)
            score = _selection_score(fig)
            entry = {
                "epoch": epoch,
                "step": step,
                "train_loss": round(running / max(1, seen), 4),
                "epoch_seconds": round(time.monotonic() - t0, 1),
                "holdout": {
                    t: {m: round(fig[t][m], 4) for m in ("accuracy", "macro_f1", "weighted_f1")} for t in fig
                },
            }
            history.append(entry)
            log.info("epoch %d holdout %s", epoch, json.dumps(entry["holdout"]))
            if score > best:
                best, bad_epochs = score, 0
                _save(model, tokenizer, cfg.out, topics, {**_meta(cfg, version, epoch), "step": step})
            else:
                bad_epochs += 1
            (cfg.out / "history.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
            if step >= total or bad_epochs > cfg.patience:
                break
    train_seconds = time.monotonic() - started
    best_model = AutoModelForSequenceClassification.from_pretrained(str(cfg.out))
    valid = evaluate_torch(best_model, tokenizer, valid_texts, valid_labels, topics, cfg.max_length)
    metrics = {
        "model": version,
        "train_seconds": round(train_seconds, 1),
        "steps": step,
        "history": history,
        "validation": {"torch-fp32": valid},
    }
    (cfg.out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    return metrics
