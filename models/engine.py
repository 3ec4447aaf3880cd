"""The inference engine the stream workers call: batched topic + sentiment prediction.

Serving imports only ONNX Runtime, ``tokenizers`` and numpy; the PyTorch backend
imports torch and transformers lazily. Texts are cleaned by
:func:`~newswatch.models.text.clean_text`, the clean-up training applies too, then
tokenized in one batch by the fast tokenizer (:meth:`ClassifierEngine.encode`),
truncated at ``max_length`` tokens (default 64; finance posts are ≈30 tokens), each distinct
token sequence once (reposts share a result), sorted by length (ties by content, so the
same texts make the same passes in any order), on CPU dealt into ``models.cpu_streams``
groups scored at once on single-threaded runs, and cut into forward passes of at most ``batch_size`` texts by
:func:`~newswatch.models.batching.plan_batches`, each padded only to its longest text
(one pass over 64 posts padded to the longest would spend about half its work on padding).

The int8 graph quantizes activations dynamically, per batch: a text's probabilities
can move by about 1e-2 with the texts batched around it (labels of clear-cut texts do
not change). Use the fp32 variant where bit-for-bit batch independence matters.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from newswatch.models.artifacts import ModelInfo, default_model_dir, onnx_path, read_model_info
from newswatch.models.batching import plan_batches
from newswatch.models.errors import ModelError, ModelNotFoundError
from newswatch.models.text import clean_text, is_blank
from newswatch.settings.models import ModelSettings

__all__ = ["ClassifierEngine", "Prediction", "softmax"]

log = logging.getLogger(__name__)

EMPTY_TEXT_ERROR = "empty text: nothing to classify"


@dataclass(frozen=True, slots=True)
class Prediction:
    """Topic and sentiment of one text."""

    topic: str  # label name, e.g. "Earnings"
    topic_prob: float
    sentiment: str  # "bearish" | "bullish" | "neutral"
    sentiment_probs: dict[str, float]  # keys "bearish", "bullish", "neutral"
    score: float  # P(bullish) - P(bearish), in [-1, 1]
    error: str | None = None  # set (labels empty/neutral, score 0.0) for empty/whitespace text


#: Fewest texts a CPU stream is given: smaller groups are not worth a thread hand-off.
MIN_STREAM_TEXTS = 8
#: Most CPU streams ``models.cpu_streams: 0`` picks.
MAX_AUTO_STREAMS = 8

#: Default fixed cost of one forward pass, in padded-token slots (see models.batching).
CPU_PASS_OVERHEAD_TOKENS = 128
GPU_PASS_OVERHEAD_TOKENS = 4096


class _Backend(Protocol):
    on_gpu: bool
    streams: int

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (serving uses 1; distillation softens with more).

    >>> softmax(np.array([[0.0, 0.0], [2.0, 0.0]]), 2.0).round(3).tolist()
    [[0.5, 0.5], [0.731, 0.269]]
    """
    z = logits if temperature == 1.0 else logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


class _OnnxBackend:
    """ONNX Runtime session; CUDA/TensorRT providers when onnxruntime-gpu offers them."""

    def __init__(self, path: Path, settings: ModelSettings) -> None:
        import onnxruntime as ort

        if not path.is_file():
            raise ModelNotFoundError(
                f"ONNX graph {path} not found; run `newswatch export --model {path.parent.parent}` "
                f"or choose another variant"
            )
        available = ort.get_available_providers()
        if settings.providers:
            missing = [p for p in settings.providers if p not in available]
            if missing:
                raise ModelError(f"ONNX Runtime providers {missing} are not available (have {available})")
            providers = list(settings.providers)
        elif settings.device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif settings.device == "cuda":
            raise ModelError(
                "device 'cuda' asked but onnxruntime has no CUDA provider; install newswatch[gpu]"
            )
        else:
            providers = ["CPUExecutionProvider"]
        on_gpu = providers[0] != "CPUExecutionProvider"
        cores = usable_cores()
        self.streams = 1 if on_gpu else settings.cpu_streams or min(cores, MAX_AUTO_STREAMS)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if settings.intra_op_threads:
            opts.intra_op_num_threads = settings.intra_op_threads
        elif not on_gpu:
            opts.intra_op_num_threads = max(1, cores // self.streams)
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if settings.intra_op_spinning else "0"
        )
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.providers = self._session.get_providers()
        self.on_gpu = self.providers[0] != "CPUExecutionProvider"

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        out = self._session.run(["logits"], feed)[0]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self._session = None


class _TorchBackend:
    """PyTorch model from the directory's safetensors; fp16/bf16 autocast on CUDA."""

    def __init__(self, model_dir: Path, settings: ModelSettings) -> None:
        try:
            import torch
            from transformers import AutoModelForSequenceClassification
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError(
                "the torch backend needs the train extra: pip install 'newswatch[train]'"
            ) from exc
        if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("pytorch_model*.bin")):
            raise ModelNotFoundError(f"{model_dir} has no PyTorch weights; use backend 'onnx'")
        cuda = torch.cuda.is_available()
        if settings.device == "cuda" and not cuda:
            raise ModelError("device 'cuda' asked but torch sees no CUDA GPU")
        self._device = "cuda" if cuda and settings.device != "cpu" else "cpu"
        self.on_gpu = self._device == "cuda"
        self.streams = 1  # torch runs one forward pass at a time (the lock below)
        self._torch = torch
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
        if self._device == "cuda":
            dtype = torch.float16 if settings.variant == "fp16" else torch.bfloat16
            model = model.to(self._device, dtype=dtype)
        self._model = model.eval()
        self._lock = threading.Lock()

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        ids = torch.from_numpy(input_ids).to(self._device)
        mask = torch.from_numpy(attention_mask).to(self._device)
        with self._lock, torch.inference_mode():
            out = self._model(input_ids=ids, attention_mask=mask).logits
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    def close(self) -> None:
        self._model = None


class ClassifierEngine:
    """Topic + sentiment classifier over one model directory.

    Build it with :meth:`load`. :meth:`predict` is synchronous and thread-safe (the
    stream calls it from an executor); it accepts any batch size and keeps input order.
    """

    def __init__(
        self, info: ModelInfo, backend: _Backend, backend_name: str, settings: ModelSettings
    ) -> None:
        from tokenizers import Tokenizer

        self.info = info
        self.settings = settings
        self.max_length = (
            min(settings.max_length, info.max_length) if info.max_length else settings.max_length
        )
        self.backend = backend_name
        self._backend: _Backend | None = backend
        self.streams = backend.streams
        self._pool = (
            ThreadPoolExecutor(max_workers=self.streams - 1, thread_name_prefix="newswatch-engine")
            if self.streams > 1
            else None
        )
        variant = settings.variant if backend_name == "onnx" else "torch"
        self.variant = variant
        self.model_version = f"{info.version}-{variant}"
        tok_file = info.path / "tokenizer.json"
        if not tok_file.is_file():
            raise ModelNotFoundError(f"{tok_file} not found; a model directory needs a fast tokenizer")
        tok = Tokenizer.from_file(str(tok_file))
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_length)
        self._tokenizer = tok
        self._pad_id = int(tok.token_to_id("[PAD]") or 0) if tok.token_to_id("[PAD]") is not None else 0
        self._n_topics = len(info.topics)
        if settings.pass_overhead_tokens is not None:
            self.pass_overhead_tokens = settings.pass_overhead_tokens
        else:
            self.pass_overhead_tokens = (
                GPU_PASS_OVERHEAD_TOKENS if backend.on_gpu else CPU_PASS_OVERHEAD_TOKENS
            )

    @classmethod
    def load(cls, settings: ModelSettings | None = None) -> ClassifierEngine:
        """Load the configured model (default settings: the shipped int8 model on CPU)."""
        settings = settings or ModelSettings()
        model_dir = Path(settings.dir) if settings.dir else default_model_dir()
        info = read_model_info(model_dir)
        backend: _Backend
        if settings.backend == "onnx":
            backend = _OnnxBackend(onnx_path(model_dir, settings.variant), settings)
        else:
            backend = _TorchBackend(model_dir, settings)
        return cls(info, backend, settings.backend, settings)

    @property
    def topics(self) -> tuple[str, ...]:
        """Topic label names in logit order."""
        return self.info.topics

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of ``texts`` as the model sees them: :func:`clean_text` then the tokenizer,
        truncated at ``max_length`` tokens (training's :func:`~newswatch.models.text.hf_encode`
        gives the same ids)."""
        cleaned = [clean_text(t, self.max_length) for t in texts]
        return [list(e.ids) for e in self._tokenizer.encode_batch(cleaned)]

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits (topics then sentiments) of non-blank ``texts``, in input order.

        On CPU with several streams the texts, sorted by length, are dealt round-robin into
        up to ``streams`` groups of similar lengths, scored at once (this thread takes the
        first group, the engine's pool the others).
        """
        if self._backend is None:
            raise ModelError("engine is closed")
        # Texts that tokenize alike (reposts, retweets) are scored once and share the result.
        slot: dict[tuple[int, ...], int] = {}
        encs: list[list[int]] = []
        src = np.empty(len(texts), dtype=np.int64)
        for i, e in enumerate(self.encode(texts)):
            j = slot.setdefault(tuple(e), len(encs))
            if j == len(encs):
                encs.append(e)
            src[i] = j
        lengths = np.array([len(e) for e in encs])
        # By length, ties by content: the same texts form the same passes in any input order
        # (int8 activations are quantized per pass, so a pass's company shifts its scores).
        order = np.array(sorted(range(len(encs)), key=lambda i: (lengths[i], encs[i])), dtype=np.int64)
        out = np.zeros((len(encs), self.info.n_labels), dtype=np.float32)
        k = max(1, min(self.streams, len(encs) // MIN_STREAM_TEXTS))
        groups = [order[j::k] for j in range(k)]
        pool = self._pool
        if k == 1 or pool is None:
            self._score(order, encs, lengths, out)
            return out[src]
        others = [pool.submit(self._score, g, encs, lengths, out) for g in groups[1:]]
        try:
            self._score(groups[0], encs, lengths, out)
        finally:
            for f in others:
                f.exception()  # wait for every group, also when this one failed
        for f in others:
            f.result()
        return out[src]

    def _score(
        self, idx_sorted: np.ndarray, encs: list[list[int]], lengths: np.ndarray, out: np.ndarray
    ) -> None:
        """Fill ``out``'s rows ``idx_sorted`` (sorted by length) pass by pass."""
        backend = self._backend
        if backend is None:
            raise ModelError("engine is closed")
        plan = plan_batches(lengths[idx_sorted].tolist(), self.settings.batch_size, self.pass_overhead_tokens)
        for start, stop in plan:
            idx = idx_sorted[start:stop]
            width = int(lengths[idx[-1]])
            ids = np.full((len(idx), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = lengths[i]
                ids[row, :n] = encs[i]
                mask[row, :n] = 1
            out[idx] = backend.logits(ids, mask)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Predictions for ``texts`` in the same order; blank texts get an error result."""
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        live = [i for i, t in enumerate(texts) if not is_blank(t)]
        results: list[Prediction] = [_empty() for _ in texts]
        if not live:
            return results
        logits = self.logits([texts[i] for i in live])
        nt = self._n_topics
        topic_p = softmax(logits[:, :nt])
        sent_p = softmax(logits[:, nt:])
        names = self.info.sentiments
        bull, bear = names.index("bullish"), names.index("bearish")
        for row, i in enumerate(live):
            t = int(topic_p[row].argmax())
            s = int(sent_p[row].argmax())
            probs = {name: float(sent_p[row, j]) for j, name in enumerate(names)}
            score = float(np.clip(sent_p[row, bull] - sent_p[row, bear], -1.0, 1.0))
            results[i] = Prediction(
                topic=self.info.topics[t],
                topic_prob=float(topic_p[row, t]),
                sentiment=names[s],
                sentiment_probs=probs,
                score=score,
            )
        return results

    def close(self) -> None:
        """Release the session and the stream threads; idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> ClassifierEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota
    (a Kubernetes CPU limit of 2 on a 64-core node gives 2)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def _empty() -> Prediction:
    return Prediction(
        topic="",
        topic_prob=0.0,
        sentiment="neutral",
        sentiment_probs={"bearish": 0.0, "bullish": 0.0, "neutral": 0.0},
        score=0.0,
        error=EMPTY_TEXT_ERROR,
    )
