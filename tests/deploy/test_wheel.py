"""The wheel the image installs: built without packaging warnings, carrying the shipped model.

The model under ``models/default`` is package data on purpose (the image is self-contained);
``pyproject.toml`` lists its folders as data-only packages. The wheel is built from a copy of
the source tree (setuptools writes ``build/`` beside the sources) without network access.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.support.chart import REPO

#: What the wheel is built from: the two files and every folder ``package-dir`` maps.
_PACKAGE_DIRS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
SOURCES = ("pyproject.toml", "README.md", *sorted(set(_PACKAGE_DIRS.values())))


def test_wheel_builds_cleanly_and_ships_the_model(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path / "dist"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-v",
            str(src),
            "-w",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "absent from the `packages` configuration" not in log
    assert "Package would be ignored" not in log
    (wheel,) = out.glob("newswatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    model = REPO / "models" / "default"
    shipped = {
        f"newswatch/models/default/{p.relative_to(model).as_posix()}" for p in model.rglob("*") if p.is_file()
    }
    assert shipped, "no model under models/default"
    assert shipped <= names, sorted(shipped - names)
    assert any(n.endswith(".onnx") for n in shipped)
