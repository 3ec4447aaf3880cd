"""Fixtures of the reliability tests: the shipped model, loaded once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from newswatch.models.engine import ClassifierEngine
from newswatch.settings import load_settings
from tests.alerts.conftest import receiver  # noqa: F401 - the loopback webhook receiver fixture


@pytest.fixture(scope="session")
def engine() -> Iterator[ClassifierEngine]:
    """The configured model (default: the shipped int8 ONNX model), loaded once."""
    eng = ClassifierEngine.load(load_settings().models)
    yield eng
    eng.close()
