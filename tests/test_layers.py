"""Layers point one way, and no package reaches into another's private modules.

The contract (docs/architecture.md):

    pipelines  ->  components  ->  validation | trainer | serving  ->  data  ->  core

A package may import itself and the layers below it. ``validation`` may use
``data`` (``jaxtx validate`` reads a file the way ExampleGen does); ``trainer``
and ``serving`` use only ``core``. Imports inside functions count too: a lazy
import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> folder
FOLDERS = {
    "core": ROOT / "jaxtx" / "core",
    "data": ROOT / "jaxtx" / "data",
    "validation": ROOT / "validation",
    "trainer": ROOT / "trainer",
    "serving": ROOT / "serving",
    "components": ROOT / "components",
    "pipelines": ROOT / "pipelines",
}

#: package -> the jaxtx packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "validation": {"core", "data"},
    "trainer": {"core"},
    "serving": {"core"},
    "components": {"core", "data", "validation", "trainer", "serving"},
    "pipelines": {"core", "data", "validation", "trainer", "serving", "components"},
}


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) for every import of a jaxtx module in a file."""
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text, filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jaxtx"):
                    found.append((node.lineno, alias.name, []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative imports stay inside their own package by construction.
                continue
            if node.module and node.module.startswith("jaxtx"):
                found.append((node.lineno, node.module, [a.name for a in node.names]))
    return found


def _target(module: str) -> tuple[str | None, list[str]]:
    """The jaxtx package a module path lands in, and its remaining parts."""
    parts = module.split(".")
    if len(parts) == 1:
        return None, []
    return parts[1], parts[2:]


def violations(extra: dict[Path, str] | None = None) -> list[str]:
    """Every layer or privacy violation; ``extra`` adds (path, source) files to check."""
    out = []
    for package, folder in FOLDERS.items():
        paths = sorted(folder.rglob("*.py"))
        paths += [p for p in (extra or {}) if folder in p.parents]
        for path in paths:
            rel = path.relative_to(ROOT)
            for line, module, names in _imports(path, (extra or {}).get(path)):
                if module == "jaxtx" and names:
                    # ``from jaxtx import trainer``: each name is a package (or the version).
                    pairs = [(f"jaxtx.{n}", []) for n in names if n != "__version__"]
                else:
                    pairs = [(module, names)]
                for mod, nms in pairs:
                    out.extend(_check(rel, line, package, mod, nms))
    return out


def _check(rel: Path, line: int, package: str, module: str, names: list[str]) -> list[str]:
    out = []
    target, rest = _target(module)
    if target is None:
        if module == "jaxtx":
            return []  # ``import jaxtx`` (the version); the facade's names are checked above
        out.append(f"{rel}:{line}: imports the top-level jaxtx facade ({module})")
        return out
    if target not in FOLDERS:
        out.append(f"{rel}:{line}: imports the top-level jaxtx facade ({module})")
        return out
    if target != package and target not in ALLOWED[package]:
        out.append(f"{rel}:{line}: {package} imports {module} (a higher layer)")
    if target != package:
        private = [p for p in rest if p.startswith("_")]
        private += [n for n in names if n.startswith("_")]
        if private:
            out.append(f"{rel}:{line}: {package} imports private {module} {names or ''}")
    return out


def test_layers_point_one_way_and_no_private_imports_across_packages():
    found = violations()
    assert not found, "layer violations:\n" + "\n".join(found)


def test_the_check_catches_a_planted_violation():
    planted = FOLDERS["trainer"] / "_planted_violation_for_test.py"
    source = (
        "def f():\n    from jaxtx.components._artifacts import ArtifactStore\n"
        "    return ArtifactStore\n"
    )
    found = violations(extra={planted: source})
    assert any("_planted_violation_for_test.py:2: trainer imports" in v for v in found), found
    assert any("private jaxtx.components._artifacts" in v for v in found), found


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("jaxtx.trainer.transform", ["apache_beam", "jaxtx.components", "prefect", "mlflow"]),
        ("jaxtx.serving", ["apache_beam", "jaxtx.components", "prefect", "mlflow", "jaxtx.trainer"]),
        ("jaxtx.core.model_format", ["apache_beam", "prefect", "mlflow", "jaxtx.trainer"]),
    ],
)
def test_importing_a_library_loads_no_higher_layer(module, forbidden):
    code = (
        f"import sys, {module}\n"
        f"bad = [m for m in {forbidden!r} if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", f"import {module} loaded {out.stdout.strip()}"
