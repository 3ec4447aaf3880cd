"""Sub-commands of the models package: ``pretrain``, ``train``, ``export``, ``evaluate``, ``predict``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]


#: Options of ``train`` and ``pretrain`` named as the config field they set; absent ones leave
#: the field at its default (``--train-embeddings`` and ``--teacher`` are mapped by hand).
_FIELD_OPTIONS = (
    "epochs",
    "batch_size",
    "lr",
    "max_length",
    "seed",
    "holdout",
    "threads",
    "limit",
    "max_steps",
    "transfer_limit",
    "patience",
    "sentiment_weight",
    "class_weight_power",
    "tasks",
    "version",
    "save_every",
    "distill_weight",
    "temperature",
    "mask_prob",
)


def _default(config: type, name: str) -> Any:
    """The default of ``config``'s field ``name``: hyper-parameters are declared once, in
    :class:`~newswatch.models.train.TrainConfig` and :class:`~newswatch.models.pretrain.PretrainConfig`;
    the options here take their defaults (and the help's "default ...") from them."""
    for f in dataclasses.fields(config):
        if f.name == name:
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{config.__name__}.{name} has no default")
            return f.default
    raise TypeError(f"{config.__name__} has no field {name!r}")


def _config_fields(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """The fields of ``config`` given on the command line; the rest keep the config's defaults.
    Also puts Hugging Face offline and the models' log lines at INFO."""
    from newswatch.models.artifacts import base_model_dir, default_data_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("newswatch.models").setLevel(logging.INFO)
    names = {f.name for f in dataclasses.fields(config)}
    fields: dict[str, Any] = {
        "base": Path(args.base) if args.base else base_model_dir(),
        "data_dir": Path(args.data) if args.data else default_data_dir(),
        "out": Path(args.out),
        "transfer": tuple(args.transfer or ()),
    }
    for name in _FIELD_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and name in names:
            fields[name] = value
    if getattr(args, "train_embeddings", False):
        fields["freeze_embeddings"] = False
    if getattr(args, "teacher", None):
        fields["teachers"] = tuple(args.teacher)
    return fields


def _add_run_args(p: argparse.ArgumentParser, config: type, *, out: str, transfer_help: str) -> None:
    """The options ``train`` and ``pretrain`` share, with ``config``'s defaults (read back by
    :func:`_config_fields`)."""

    def default(name: str) -> str:
        return f"default {_default(config, name)}"

    p.add_argument("--base", help="Local Hugging Face model directory (default: packaged all-MiniLM-L6-v2).")
    p.add_argument("--data", help="Dataset directory (default: ../shared/data).")
    p.add_argument("--out", default=out, help=f"Output directory (default {out}).")
    p.add_argument("--epochs", type=int, help=f"Passes over the training texts ({default('epochs')}).")
    p.add_argument("--batch-size", type=int, help=f"Texts per optimiser step ({default('batch_size')}).")
    p.add_argument("--lr", type=float, help=f"Peak learning rate ({default('lr')}).")
    p.add_argument("--max-length", type=int, help=f"Tokens per text, truncation ({default('max_length')}).")
    p.add_argument("--seed", type=int, help=f"Seed of shuffles, hold-out and init ({default('seed')}).")
    p.add_argument(
        "--holdout",
        type=float,
        help=f"Fraction of train held out for tuning ({default('holdout')}; pretrain and train must agree).",
    )
    p.add_argument("--threads", type=int, help=f"torch threads, 0 = torch's default ({default('threads')}).")
    p.add_argument("--limit", type=int, help="Rows per task and split (smoke runs).")
    p.add_argument("--max-steps", type=int, help="Stop after this many optimiser steps.")
    p.add_argument("--transfer", action="append", metavar="FILE", help=transfer_help)
    p.add_argument("--transfer-limit", type=int, help="Use a random sample of this many transfer texts.")


def _train(args: argparse.Namespace, settings: Any) -> int:
    from newswatch.models.train import TrainConfig, train

    cfg = TrainConfig(**_config_fields(args, TrainConfig))
    metrics = train(cfg)
    from newswatch.models.card import write_card

    write_card(cfg.out)
    fig = metrics["validation"]["torch-fp32"]
    for task, f in fig.items():
        print(
            f"{task}: accuracy {f['accuracy']:.4f} macro-F1 {f['macro_f1']:.4f} "
            f"weighted-F1 {f['weighted_f1']:.4f}"
        )
    print(f"model written to {cfg.out}")
    return 0


def _pretrain(args: argparse.Namespace, settings: Any) -> int:
    from newswatch.models.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(**_config_fields(args, PretrainConfig))
    record = pretrain(cfg)
    first, last = record["history"][0], record["history"][-1]
    print(
        f"{record['texts']} texts, {record['steps']} steps in {record['seconds']:.0f} s; "
        f"hold-out masked-LM loss {first['holdout_mlm_loss']:.4f} -> {last['holdout_mlm_loss']:.4f}"
    )
    print(f"adapted base written to {cfg.out} (use it as newswatch train --base {cfg.out})")
    return 0


def _add_pretrain(subparsers: Any) -> None:
    from newswatch.models.pretrain import PretrainConfig

    p = subparsers.add_parser(
        "pretrain", help="Adapt the base encoder to finance texts (masked-LM) before newswatch train."
    )
    _add_run_args(
        p,
        PretrainConfig,
        out="runs/base",
        transfer_help="Unlabelled texts (CSV 'text' column or JSON lines) to pre-train on as well; "
        "near-duplicates and any text of the labelled splits are dropped.",
    )
    p.add_argument(
        "--mask-prob",
        type=float,
        help=f"Share of tokens masked (default {_default(PretrainConfig, 'mask_prob')}).",
    )
    p.set_defaults(func=_pretrain)


def add_commands(subparsers: Any) -> None:  # argparse._SubParsersAction
    """Register this package's sub-commands on the ``newswatch`` parser."""
    from newswatch.models.train import TrainConfig

    _add_pretrain(subparsers)
    p = subparsers.add_parser("train", help="Fine-tune the topic + sentiment classifier.")
    _add_run_args(
        p,
        TrainConfig,
        out="runs/model",
        transfer_help="Unlabelled texts (CSV 'text' column or JSON lines) the teachers label for the "
        "student; near-duplicates and any text of the labelled splits are dropped. Needs --teacher.",
    )

    def default(name: str) -> str:
        return f"default {_default(TrainConfig, name)}"

    p.add_argument(
        "--patience", type=int, help=f"Epochs without improvement before stopping ({default('patience')})."
    )
    p.add_argument(
        "--sentiment-weight",
        type=float,
        help=f"Weight of the sentiment loss ({default('sentiment_weight')}).",
    )
    p.add_argument(
        "--class-weight-power",
        type=float,
        help="Weight each class's loss by count ** -POWER (0 = none, 0.5 = sqrt-inverse frequency; "
        f"{default('class_weight_power')}).",
    )
    p.add_argument(
        "--tasks",
        choices=("both", "topic", "sentiment"),
        help=f"Heads trained: both share the encoder ({default('tasks')}).",
    )
    p.add_argument("--version", help="Model version string (default derived from base and date).")
    p.add_argument(
        "--save-every",
        type=int,
        help=f"Also save <out>/latest every N steps, 0 = never ({default('save_every')}).",
    )
    p.add_argument(
        "--train-embeddings",
        action="store_true",
        help="Also fine-tune the word embeddings (by default they stay frozen)"
        if _default(TrainConfig, "freeze_embeddings")
        else "The word embeddings are fine-tuned anyway (the default).",
    )
    p.add_argument(
        "--teacher",
        action="append",
        metavar="DIR",
        help="Distil from this trained model directory (repeat for an ensemble; a --tasks topic or "
        "sentiment teacher speaks for that head only).",
    )
    p.add_argument(
        "--distill-weight",
        type=float,
        help=f"Share of the loss from the teachers' soft labels, 0..1 ({default('distill_weight')}).",
    )
    p.add_argument("--temperature", type=float, help=f"Distillation temperature ({default('temperature')}).")
    p.set_defaults(func=_train)
    _add_more(subparsers)


def _settings_for(args: argparse.Namespace, settings: Any) -> Any:
    """The ``models`` settings section with ``--model``/``--variant``/``--backend`` applied."""
    base = settings.models
    updates: dict[str, Any] = {}
    if getattr(args, "model", None):
        updates["dir"] = Path(args.model)
    if getattr(args, "variant", None):
        updates["variant"] = args.variant
    if getattr(args, "backend", None):
        updates["backend"] = args.backend
    return base.model_copy(update=updates) if updates else base


def _export(args: argparse.Namespace, settings: Any) -> int:
    import json

    from newswatch.models.artifacts import default_data_dir
    from newswatch.models.card import write_card
    from newswatch.models.export import export_model

    model_dir = Path(args.model)
    report = export_model(
        model_dir,
        Path(args.data) if args.data else default_data_dir(),
        variants=tuple(args.variants.split(",")),
        limit=args.limit,
        max_drop=args.max_drop / 100.0,
    )
    write_card(model_dir)
    print(json.dumps(report, indent=1))
    if args.ship_to:
        from newswatch.models.export import ship_model

        print(f"serving copy written to {ship_model(model_dir, Path(args.ship_to))}")
    return 0 if all(r["written"] for k, r in report.items() if k != "torch-fp32") else 1


def _evaluate(args: argparse.Namespace, settings: Any) -> int:
    import json

    from newswatch.models.artifacts import default_data_dir
    from newswatch.models.engine import ClassifierEngine
    from newswatch.models.evaluate import evaluate_engine

    with ClassifierEngine.load(_settings_for(args, settings)) as engine:
        fig = evaluate_engine(engine, Path(args.data) if args.data else default_data_dir(), args.limit)
        summary: dict[str, Any] = {
            task: {m: round(f[m], 4) for m in ("accuracy", "macro_f1", "weighted_f1")} | {"n": f["n"]}
            for task, f in fig.items()
        }
        summary["model"] = engine.model_version
        summary["variant"] = engine.variant
        summary["backend"] = engine.backend
    if args.json:
        if args.full:
            summary["details"] = fig
        print(json.dumps(summary))
    else:
        for task in ("topic", "sentiment"):
            s = summary[task]
            print(
                f"{task:9s} accuracy {s['accuracy']:.4f}  macro-F1 {s['macro_f1']:.4f}  "
                f"weighted-F1 {s['weighted_f1']:.4f}  (n={s['n']})"
            )
        print(f"model {summary['model']} ({summary['backend']}, {summary['variant']})")
    return 0


def _predict(args: argparse.Namespace, settings: Any) -> int:
    import json

    from newswatch.models.engine import ClassifierEngine
    from newswatch.models.inputs import read_texts

    texts = list(args.text or [])
    if args.input:
        texts.extend(read_texts(Path(args.input)))
    if not texts:
        from newswatch.errors import ConfigError

        raise ConfigError("no text given: pass TEXT arguments or --input FILE.csv|FILE.jsonl")
    with ClassifierEngine.load(_settings_for(args, settings)) as engine:
        preds = engine.predict(texts)
    for text, p in zip(texts, preds, strict=True):
        row = {
            "text": text.encode("utf-8", "replace").decode("utf-8"),
            "topic": p.topic,
            "topic_prob": round(p.topic_prob, 4),
            "sentiment": p.sentiment,
            "sentiment_probs": {k: round(v, 4) for k, v in p.sentiment_probs.items()},
            "score": round(p.score, 4),
        }
        if p.error:
            row["error"] = p.error
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            flag = f"  [{p.error}]" if p.error else ""
            print(f"{p.topic:28s} {p.topic_prob:.2f}  {p.sentiment:8s} {p.score:+.2f}  {text[:80]!r}{flag}")
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="Model directory (default: the shipped model).")
    p.add_argument("--variant", choices=("int8", "fp32", "fp16"), help="ONNX graph (default int8).")
    p.add_argument("--backend", choices=("onnx", "torch"), help="Inference backend (default onnx).")


def _add_more(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="Write ONNX fp32/int8/fp16 graphs after a parity check.")
    p.add_argument("--model", required=True, help="Trained model directory (from `newswatch train`).")
    p.add_argument("--data", help="Dataset directory (default: ../shared/data).")
    p.add_argument("--variants", default="fp32,int8,fp16", help="Comma-separated variants to write.")
    p.add_argument("--limit", type=int, help="Validation rows per task for the parity check.")
    p.add_argument(
        "--max-drop", type=float, default=1.0, help="Refuse a variant losing more accuracy points."
    )
    p.add_argument(
        "--ship-to", help="Also copy the int8 serving files to this directory (e.g. models/default)."
    )
    p.set_defaults(func=_export)

    p = subparsers.add_parser("evaluate", help="Accuracy and F1 on the validation splits.")
    _add_model_args(p)
    p.add_argument("--data", help="Dataset directory (default: ../shared/data).")
    p.add_argument("--limit", type=int, help="Validation rows per task.")
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    p.add_argument(
        "--full", action="store_true", help="With --json: per-class figures and confusion matrices."
    )
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("predict", help="Label texts offline.")
    p.add_argument("text", nargs="*", help="Texts to label.")
    p.add_argument(
        "--input", help="A .csv file (its 'text' column) or a .jsonl file (a 'text' field per line)."
    )
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="One JSON line per text.")
    p.set_defaults(func=_predict)
