"""Prefect's client state goes to the working folder, not ``~/.prefect``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ONE_COMPONENT = '''
import json
from jaxtx import Artifact, Output, Pipeline, component


class Numbers(Artifact):
    """A JSON list of numbers."""


@component
def Make(nums: Output[Numbers], *, n: int = 3) -> None:
    (nums.path / "nums.json").write_text(json.dumps(list(range(n))))


with Pipeline("one-component") as pipeline:
    Make()
'''


def _env(user_home: Path) -> dict[str, str]:
    """This session's environment (its Prefect server included) with a fresh
    user home and no PREFECT_HOME: what a user who never configured Prefect has."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "JAXTX_HOME")}
    env.update(HOME=str(user_home), PYTHONWARNINGS="ignore")
    return env


def test_a_run_leaves_nothing_in_the_users_prefect_folder(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    home = tmp_path / "work"
    target = tmp_path / "one.py"
    target.write_text(ONE_COMPONENT)
    r = subprocess.run(
        [sys.executable, "-m", "jaxtx.pipelines.cli", "run", str(target), "--home", str(home)],
        env=_env(user),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (user / ".prefect").exists()
    assert (home / "prefect").is_dir()


def test_a_prefect_configuration_of_the_user_is_left_alone(tmp_path: Path) -> None:
    user = tmp_path / "user"
    (user / ".prefect").mkdir(parents=True)
    (user / ".prefect" / "profiles.toml").write_text('active = "mine"\n[profiles.mine]\n')
    code = (
        "import os; from jaxtx.pipelines._env import use_working_folder_prefect_home as f; "
        f"print(f({str(tmp_path / 'work')!r}), os.environ.get('PREFECT_HOME'))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=_env(user), capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["False", "None"]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    r = subprocess.run(
        [sys.executable, "-c", code], env=_env(fresh), capture_output=True, text=True, timeout=120
    )
    assert r.stdout.split() == ["True", str((tmp_path / "work" / "prefect").resolve())]
