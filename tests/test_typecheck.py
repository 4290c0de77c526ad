"""The libraries type-check (mypy, configured in pyproject.toml).

The packages are mapped from top-level folders (``validation/`` is
``jaxtx.validation``), which mypy cannot see through the editable install's
import hook, so the test lays out a tree of links named as the packages are.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ["jaxtx.core", "jaxtx.data", "jaxtx.validation", "jaxtx.trainer", "jaxtx.serving"]
FOLDERS = {
    "core": ROOT / "jaxtx" / "core",
    "data": ROOT / "jaxtx" / "data",
    "validation": ROOT / "validation",
    "trainer": ROOT / "trainer",
    "serving": ROOT / "serving",
    "components": ROOT / "components",
    "pipelines": ROOT / "pipelines",
}


def package_tree(dest: Path) -> Path:
    """``dest/jaxtx/...`` with each package folder linked under its import name."""
    top = dest / "jaxtx"
    top.mkdir(parents=True)
    for f in (ROOT / "jaxtx").iterdir():
        if f.is_file():
            (top / f.name).symlink_to(f)
    for name, folder in FOLDERS.items():
        (top / name).symlink_to(folder, target_is_directory=True)
    return dest


def test_libraries_type_check(tmp_path):
    tree = package_tree(tmp_path / "src")
    args = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    args += ["--cache-dir", str(tmp_path / "cache")]
    for lib in LIBRARIES:
        args += ["-p", lib]
    env = dict(os.environ, MYPYPATH=str(tree))
    out = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
