"""Errors raised by the classifier package."""

from __future__ import annotations

from newswatch.errors import NewswatchError

__all__ = ["DataError", "ExportError", "ModelError", "ModelNotFoundError"]


class ModelError(NewswatchError):
    """A model directory is unusable (missing file, wrong layout, missing extra)."""


class ModelNotFoundError(ModelError):
    """The model directory or one of its files does not exist."""


class DataError(NewswatchError):
    """A dataset file is missing or malformed."""


class ExportError(ModelError):
    """An ONNX variant failed its parity check and was not written."""
