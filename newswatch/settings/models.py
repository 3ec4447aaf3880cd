"""Settings of the classifier engine (section ``models``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelSettings(BaseModel):
    """Which model to load and how to run it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dir: Path | None = Field(
        None, description="Model directory; None loads the model shipped in the package."
    )
    backend: Literal["onnx", "torch"] = Field("onnx", description="ONNX Runtime (serving) or PyTorch.")
    variant: Literal["int8", "fp32", "fp16"] = Field(
        "int8", description="ONNX graph: int8 for CPU, fp16 for GPU, fp32 for reference."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' uses CUDA when available.")
    providers: tuple[str, ...] = Field(
        (), description="Explicit ONNX Runtime execution providers, e.g. TensorrtExecutionProvider."
    )
    max_length: int = Field(64, ge=8, le=512, description="Tokens per text; longer texts are truncated.")
    batch_size: int = Field(64, ge=1, description="Texts per forward pass inside the engine.")
    pass_overhead_tokens: int | None = Field(
        None,
        ge=0,
        description=(
            "Fixed cost of one forward pass, in padded-token slots, used to cut length-sorted "
            "texts into passes (models.batching); None = 128 on CPU, 4096 on a GPU."
        ),
    )
    cpu_streams: int = Field(
        0,
        ge=0,
        description="ONNX Runtime on CPU: a batch is dealt into this many groups of similar-length "
        "texts, scored at once, each on its own thread; 0 = one per usable core (at most 8). "
        "Independent runs keep every core busy where one run's intra-op threads wait on each other "
        "at every operator (docs/benchmarks.md, soak section). Ignored on a GPU and by the torch backend.",
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime intra-op threads per run; 0 = the usable cores divided among the "
        "CPU streams (1 each by default), or all cores on a GPU.",
    )
    intra_op_spinning: bool = Field(
        False,
        description="Let ONNX Runtime's intra-op threads spin while waiting for work. Off: a worker "
        "shares its cores with its own event loop, the broker client and often other processes, "
        "and spinning threads take CPU from all of them (bench/soak.py measures the whole stack).",
    )
