"""Classifier speed: the newswatch engine (int8 ONNX, batched) vs a newcomer's baseline.

The baseline is ``transformers.pipeline("text-classification")`` (PyTorch fp32), called one
text at a time, over ``--weights`` or, by default, the packaged base encoder with a head of
the engine's shape (speed does not depend on trained weights; a fresh clone has none). Both
run in the same process on the same validation texts. Prints one JSON line with ``--json``::

    python bench/classify.py --json [--limit N] [--weights DIR] [--model DIR] [--one-pass] [--one-stream]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _machine(device: str) -> dict[str, Any]:
    import onnxruntime

    info: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "device": device,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def _timed(calls: Sequence[Any], fn: Callable[[Any], Any], n_texts: int) -> dict[str, Any]:
    lat: list[float] = []
    start = time.perf_counter()
    for arg in calls:
        t0 = time.perf_counter()
        fn(arg)
        lat.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    lat.sort()
    return {
        "texts": n_texts,
        "seconds": round(total, 3),
        "texts_per_s": round(n_texts / total, 1),
        "p50_ms": round(1000 * statistics.median(lat), 3),
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3),
        "calls": len(calls),
    }


BASELINE_IMPL = "transformers.pipeline, one text per call, fp32"


def _baseline(args: argparse.Namespace, engine_topics: int) -> Callable[[str], Any]:
    """A newcomer's classifier: ``transformers.pipeline`` over ``--weights``, one text per call.

    Without ``--weights`` it is the packaged base encoder (the one the shipped model was
    fine-tuned from) with an untrained head of the engine's topic count: the same shapes,
    so the same speed, on a fresh clone where no model was trained.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from newswatch.models.artifacts import base_model_dir

    device = 0 if args.device == "cuda" else -1
    if args.weights:
        weights = Path(args.weights)
        if not (weights / "config.json").is_file():
            sys.exit(f"bench: --weights {weights} is not a Hugging Face model directory")
        clf = pipeline("text-classification", model=str(weights), device=device, top_k=None)
    else:
        base = base_model_dir()
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=engine_topics)
        tokenizer = AutoTokenizer.from_pretrained(base)
        clf = pipeline("text-classification", model=model, tokenizer=tokenizer, device=device, top_k=None)
    clf("warm-up")
    return clf


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run both sides of the benchmark and return the result object."""
    from newswatch.models.artifacts import default_data_dir
    from newswatch.models.data import load_split
    from newswatch.models.engine import ClassifierEngine
    from newswatch.settings.models import ModelSettings

    data_dir = Path(args.data) if args.data else default_data_dir()
    texts: list[str] = []
    for task in ("topic", "sentiment"):
        texts.extend(load_split(data_dir, task, "valid").texts)
    if args.limit:
        texts = texts[:: max(1, len(texts) // args.limit)][: args.limit]

    settings = ModelSettings(
        dir=Path(args.model) if args.model else None,
        variant=args.variant,
        device=args.device,
        batch_size=args.batch_size,
    )
    engine = ClassifierEngine.load(settings)
    batches = [texts[i : i + args.batch_size] for i in range(0, len(texts), args.batch_size)]
    engine.predict(batches[0])  # warm-up
    eng = _timed(batches, engine.predict, len(texts))
    eng.update({"model": engine.model_version, "batch_size": args.batch_size, "cpu_streams": engine.streams})
    result: dict[str, Any] = {"engine": eng}
    if args.two_encoders:
        # The alternative design: a separate topic model and sentiment model of the same size,
        # i.e. two encoder passes per post. Same graph run twice per batch = its cost.
        two = _timed(batches, lambda b: (engine.predict(b), engine.logits(b)), len(texts))
        result["two_encoders"] = two
    engine.close()
    if args.one_pass:
        # The same engine with length bucketing off: one forward pass per call, padded to its longest.
        plain = ClassifierEngine.load(settings.model_copy(update={"pass_overhead_tokens": 10**9}))
        plain.predict(batches[0])
        result["engine_one_pass"] = _timed(batches, plain.predict, len(texts))
        result["bucketing_ratio"] = round(eng["texts_per_s"] / result["engine_one_pass"]["texts_per_s"], 2)
        plain.close()

    if args.one_stream:
        # The same engine as one run at a time with every core in its intra-op threads (before
        # models.cpu_streams): a batch is not split into groups scored at once.
        single = ClassifierEngine.load(settings.model_copy(update={"cpu_streams": 1}))
        single.predict(batches[0])
        result["engine_one_stream"] = _timed(batches, single.predict, len(texts))
        result["streams_ratio"] = round(eng["texts_per_s"] / result["engine_one_stream"]["texts_per_s"], 2)
        single.close()

    if not args.skip_baseline:
        base = _timed(texts, _baseline(args, engine_topics=len(engine.topics)), len(texts))
        base.update({"model": args.weights or "packaged base encoder", "impl": BASELINE_IMPL})
        result["baseline"] = base
        result["ratio"] = round(eng["texts_per_s"] / base["texts_per_s"], 2)
    result["machine"] = _machine(args.device)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="Print one JSON line.")
    p.add_argument("--limit", type=int, help="Use N validation texts (spread over both tasks).")
    p.add_argument("--data", help="Dataset directory (default ../shared/data).")
    p.add_argument("--model", help="Engine model directory (default: the shipped model).")
    p.add_argument("--variant", default="int8", choices=("int8", "fp32", "fp16"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--batch-size", type=int, default=64, help="Texts per engine call (the stream sends ≤64).")
    p.add_argument(
        "--weights",
        default=None,
        help="Fine-tuned HF weights for the baseline (default: the packaged base encoder, same shapes).",
    )
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument(
        "--two-encoders", action="store_true", help="Also time two encoder passes per post (two models)."
    )
    p.add_argument("--one-pass", action="store_true", help="Also time the engine with length bucketing off.")
    p.add_argument(
        "--one-stream", action="store_true", help="Also time the engine as one run at a time (cpu_streams 1)."
    )
    args = p.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
