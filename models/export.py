"""ONNX export (fp32; int8 by `models/quantize.py`; fp16) with a parity check against PyTorch.

Each variant is written to a temporary file, run with ONNX Runtime on the validation
texts and compared with the PyTorch model: label agreement and accuracy per task. A
variant whose accuracy on either task drops more than ``max_drop`` (1 point) below
PyTorch is refused (not written). Results go into ``metrics.json`` under
``validation[<variant>]`` and ``parity[<variant>]``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from newswatch.models.artifacts import SENTIMENTS, onnx_path, read_model_info
from newswatch.models.data import load_split
from newswatch.models.errors import ExportError, ModelError, ModelNotFoundError
from newswatch.models.quantize import quantize_int8
from newswatch.models.scoring import score_task

__all__ = ["SERVING_FILES", "VARIANTS", "export_model", "ship_model"]

log = logging.getLogger(__name__)

VARIANTS = ("fp32", "int8", "fp16")
#: What a serving-only model directory needs besides its ONNX graph.
SERVING_FILES = ("labels.json", "meta.json", "tokenizer.json", "metrics.json", "MODEL_CARD.md")


def ship_model(model_dir: Path, dest: Path, variants: tuple[str, ...] = ("int8",)) -> Path:
    """Copy the serving files and ONNX ``variants`` of ``model_dir`` into ``dest`` (replaced)."""
    model_dir, dest = Path(model_dir), Path(dest)
    for variant in variants:
        if not onnx_path(model_dir, variant).is_file():
            raise ModelNotFoundError(f"{onnx_path(model_dir, variant)} missing; run `newswatch export` first")
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "onnx").mkdir(parents=True)
    for name in SERVING_FILES:
        if (model_dir / name).is_file():
            shutil.copy(model_dir / name, dest / name)
    for variant in variants:
        shutil.copy(onnx_path(model_dir, variant), onnx_path(dest, variant))
    return dest


def _export_fp32(model_dir: Path, dest: Path, opset: int = 17) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()

    class _Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.randint(1000, 2000, (2, 16), dtype=torch.long)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        torch.onnx.export(
            _Logits(model),
            (ids, mask),
            str(dest),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "logits": {0: "batch"},
            },
            opset_version=opset,
            dynamo=False,
        )


def _convert_fp16(src: Path, dest: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dest))


def _reference(
    model_dir: Path, texts: dict[str, list[str]], max_length: int, nt: int
) -> dict[str, np.ndarray]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from newswatch.models.torch_infer import torch_logits

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    out = {}
    for task, t in texts.items():
        logits = torch_logits(model, tok, t, max_length)
        out[task] = logits[:, :nt] if task == "topic" else logits[:, nt:]
    return out


def export_model(
    model_dir: Path,
    data_dir: Path,
    variants: tuple[str, ...] = VARIANTS,
    limit: int | None = None,
    max_drop: float = 0.01,
) -> dict[str, Any]:
    """Write the ONNX ``variants`` of ``model_dir`` that pass the parity check.

    Returns ``{variant: {"written": bool, "topic": {...}, "sentiment": {...}, "reason": ...}}``.
    """
    from newswatch.models.engine import ClassifierEngine
    from newswatch.models.evaluate import validation_logits
    from newswatch.settings.models import ModelSettings

    model_dir = Path(model_dir)
    if not (model_dir / "model.safetensors").is_file():
        raise ModelNotFoundError(
            f"{model_dir} has no model.safetensors; export needs a trained model directory"
        )
    info = read_model_info(model_dir)
    nt = len(info.topics)
    valid = {task: load_split(data_dir, task, "valid", limit) for task in ("topic", "sentiment")}
    names = {"topic": list(info.topics), "sentiment": list(SENTIMENTS)}
    ref = _reference(model_dir, {k: v.texts for k, v in valid.items()}, info.max_length, nt)
    ref_fig = {t: score_task(valid[t].labels, ref[t].argmax(1).tolist(), names[t]) for t in valid}
    n_texts = {t: len(v.texts) for t, v in valid.items()}
    report: dict[str, Any] = {
        "torch-fp32": {t: {"accuracy": ref_fig[t]["accuracy"], "n": n_texts[t]} for t in valid}
    }
    metrics_file = model_dir / "metrics.json"
    metrics: dict[str, Any] = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    full = limit is None  # figures on a subset are parity evidence, not validation figures
    if full:
        metrics.setdefault("validation", {})["torch-fp32"] = ref_fig
    (model_dir / "onnx").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        _export_fp32(model_dir, fp32)
        for variant in variants:
            if variant not in VARIANTS:
                raise ModelError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
            cand = Path(tmp) / f"model.{variant}.onnx"
            if variant == "int8":
                quantize_int8(fp32, cand)
            elif variant == "fp16":
                _convert_fp16(fp32, cand)
            entry: dict[str, Any] = {"written": False, "n": n_texts}
            try:
                # Score the candidate through the real engine (same tokenizer, batching, cleaning).
                staged = Path(tmp) / f"stage-{variant}"
                (staged / "onnx").mkdir(parents=True)
                for f in ("labels.json", "meta.json", "tokenizer.json"):
                    shutil.copy(model_dir / f, staged / f)
                shutil.copy(cand, onnx_path(staged, variant))
                settings = ModelSettings(dir=staged, variant=variant)
                with ClassifierEngine.load(settings) as engine:
                    got = validation_logits(engine, data_dir, limit)
            except Exception as exc:  # an execution provider may lack kernels (fp16 on CPU)
                entry["reason"] = f"could not run on this machine: {type(exc).__name__}: {exc}"[:300]
                report[variant] = entry
                log.warning("%s not verified: %s", variant, entry["reason"])
                continue
            fig: dict[str, Any] = {}
            ok = True
            for task in valid:
                logits, labels = got[task]
                pred = logits.argmax(1)
                f = score_task(labels, pred.tolist(), names[task])
                agreement = float((pred == ref[task].argmax(1)).mean())
                drop = ref_fig[task]["accuracy"] - f["accuracy"]
                entry[task] = {
                    "accuracy": f["accuracy"],
                    "macro_f1": f["macro_f1"],
                    "agreement": agreement,
                    "accuracy_drop": drop,
                }
                fig[task] = f
                ok = ok and drop <= max_drop + 1e-9
            if ok:
                shutil.copy(cand, onnx_path(model_dir, variant))
                entry["written"] = True
                entry["bytes"] = onnx_path(model_dir, variant).stat().st_size
                if full:
                    metrics["validation"][f"onnx-{variant}"] = fig
            else:
                entry["reason"] = f"accuracy dropped more than {max_drop * 100:.0f} point(s)"
            report[variant] = entry
    metrics.setdefault("parity", {}).update({k: v for k, v in report.items() if k != "torch-fp32"})
    if full or "torch-fp32" not in metrics["parity"]:
        metrics["parity"]["torch-fp32"] = report["torch-fp32"]
    metrics_file.write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    refused = [v for v in variants if not report[v]["written"]]
    if refused and all(not report[v]["written"] for v in variants):
        raise ExportError(f"no variant written: {json.dumps({v: report[v].get('reason') for v in refused})}")
    return report
