"""Docstring examples run as tests (river's habit): they must stay true.

The one place they run: every module of ``stream``, ``alerts`` and ``models``, once each.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import newswatch.alerts
import newswatch.models
import newswatch.stream

_SKIP = {"newswatch.cli.main"}


def _modules() -> list[str]:
    names = []
    for package in (newswatch.stream, newswatch.alerts, newswatch.models):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name not in _SKIP:
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {name}"
