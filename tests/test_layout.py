"""The house plan: each package imports only the packages below it.

``cli`` → everything; ``demo`` → everything but ``cli``; ``stream`` → ``models``, ``io``
and the root; ``alerts`` and ``models`` → ``io`` and the root; ``io`` → the root; the
root (``newswatch/`` without ``io/``) → nothing of newswatch's packages. Read from every
``import`` in the source, including those inside functions and ``TYPE_CHECKING`` blocks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Package → the folder its modules live in (as mapped by ``package-dir``).
FOLDERS = {
    "cli": ROOT / "cli",
    "demo": ROOT / "demo",
    "stream": ROOT / "stream",
    "alerts": ROOT / "alerts",
    "models": ROOT / "models",
    "io": ROOT / "newswatch" / "io",
    "root": ROOT / "newswatch",
}

#: Package → the packages it may import (itself and the root always allowed).
ALLOWED = {
    "cli": {"demo", "stream", "alerts", "models", "io"},
    "demo": {"stream", "alerts", "models", "io"},
    "stream": {"models", "io"},
    "alerts": {"io"},
    "models": {"io"},
    "io": set(),
    "root": set(),
}


def _package_of(module: str) -> str | None:
    """The package a ``newswatch...`` module name belongs to, or None if not ours."""
    parts = module.split(".")
    if parts[0] != "newswatch":
        return None
    if len(parts) > 1 and parts[1] in FOLDERS:
        return parts[1]
    return "root"


def _sources(package: str) -> list[Path]:
    files = sorted(FOLDERS[package].rglob("*.py"))
    if package == "root":
        files = [f for f in files if FOLDERS["io"] not in f.parents]
    return files


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # ``from newswatch import stream`` names a package in the alias
            if node.module == "newswatch":
                found.extend((node.lineno, f"newswatch.{alias.name}") for alias in node.names)
    return found


@pytest.mark.parametrize("package", sorted(FOLDERS))
def test_imports_point_down(package: str) -> None:
    allowed = ALLOWED[package] | {package, "root"}
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _sources(package)
        for line, module in _imports(path)
        if (target := _package_of(module)) is not None and target not in allowed
    ]
    assert not wrong, "imports against the house plan:\n" + "\n".join(wrong)


def test_every_module_is_in_a_known_package() -> None:
    """A new top-level folder must be added to the plan (and to ``package-dir``)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    for package, folder in FOLDERS.items():
        assert any(folder.glob("*.py")), f"{package}: no modules in {folder}"
        if package not in ("root", "io"):
            assert f'"newswatch.{package}" = "{folder.name}"' in pyproject, package


def test_the_plan_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself: an upward import is reported."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from newswatch.stream.windows import WindowSpec\n")
    assert [_package_of(m) for _, m in _imports(module)] == ["stream"]


def _test_imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a ``tests`` module in ``path`` (a module of ``package``),
    relative ones made absolute."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found.append((node.lineno, base))
            # ``from tests.stream import test_aggregate`` names the module in the alias
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return [(line, m) for line, m in found if m == "tests" or m.startswith("tests.")]


def test_tests_share_helpers_only_through_tests_support() -> None:
    """No test module imports another test module or a conftest; helpers shared between test
    folders come from ``tests.support``, which imports nothing else of ``tests``."""
    wrong = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        own = path.relative_to(ROOT / "tests").parts
        folder = own[0] if len(own) > 1 else None
        for line, module in _test_imports(path, ".".join(path.relative_to(ROOT).parent.parts)):
            parts = module.split(".")
            leaf = parts[-1]
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if leaf.startswith("test_") or leaf == "conftest":
                wrong.append(where)
            elif folder == "support" and len(parts) > 1 and parts[1] != "support":
                wrong.append(f"{where} (tests.support imports only tests.support)")
            elif len(parts) > 1 and parts[1] not in ("support", folder):
                wrong.append(f"{where} (shared helpers belong in tests.support)")
    assert not wrong, "test helpers shared the wrong way:\n" + "\n".join(wrong)


def test_the_test_import_checker_sees_an_import_of_a_test_module(tmp_path: Path) -> None:
    """The checker itself: absolute, relative and aliased imports of test modules are seen."""
    module = tmp_path / "probe.py"
    module.write_text(
        "from tests.stream.test_aggregate import scored\n"
        "from .test_kafka import x\n"
        "from . import conftest\n"
        "from tests.alerts import test_notify\n"
    )
    found = [m for _, m in _test_imports(module, "tests.stream")]
    assert "tests.stream.test_aggregate" in found
    assert "tests.stream.test_kafka" in found
    assert "tests.stream.conftest" in found
    assert "tests.alerts.test_notify" in found
