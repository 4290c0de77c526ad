"""Checkpointing with Orbax: a run killed with SIGKILL resumes where it left off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    import optax
    from jaxtx import trainer as jt

    ckpt_dir, out = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.float32)
    feats = {f"x{i}": x[:, i] for i in range(4)}
    train = jt.ArrayDataset(feats, y, batch_size=50, shuffle_seed=0)  # 20 steps per epoch
    ev = jt.ArrayDataset(feats, y, batch_size=500)

    class Pace(jt.Callback):
        # slows the first run down so that the test can kill it mid-way
        def on_step_end(self, step, state, metrics):
            time.sleep(float(os.environ.get("PACE", "0")))

    trainer = jt.TrainLoop(jt.MLP(hidden=(16,), dropout=0.1), optax.adam(1e-2), loss="bce", seed=1)
    history = trainer.fit(
        train, ev, epochs=3,
        callbacks=[Pace(), jt.Checkpoint(ckpt_dir, every_n_steps=7, max_to_keep=2)],
    )
    params = {str(i): np.asarray(p) for i, p in enumerate(
        __import__("jax").tree.leaves(trainer.state.params))}
    np.savez(out + ".npz", **params)
    with open(out + ".json", "w") as f:
        json.dump({"initial_step": history.initial_step, "history": history.to_dict(),
                   "step": int(trainer.state.step)}, f)
    """
)


def _complete_steps(ckpt_dir: Path) -> list[int]:
    if not ckpt_dir.exists():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())


def _run(script: Path, ckpt: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env, "PACE": "0"}
    return subprocess.run(
        [sys.executable, str(script), str(ckpt), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path: Path, compile_cache_env: dict[str, str]) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    ckpt = tmp_path / "ckpt"

    # 1. start, wait for the first complete checkpoint, SIGKILL
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ckpt), str(tmp_path / "killed")],
        env={**os.environ, **compile_cache_env, "PACE": "0.05"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90
    try:
        while not _complete_steps(ckpt):
            assert proc.poll() is None, f"training exited early: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed.json").exists()
    saved = _complete_steps(ckpt)
    assert saved and max(saved) < 60

    # 2. the same call again resumes from the latest complete checkpoint and finishes
    res = _run(script, ckpt, tmp_path / "resumed", compile_cache_env)
    assert res.returncode == 0, res.stderr
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["initial_step"] == max(saved)
    assert resumed["step"] == 60
    assert [r["epoch"] for r in resumed["history"]["epochs"]] == [0, 1, 2]

    # 3. and ends exactly where an uninterrupted run ends
    res = _run(script, tmp_path / "ckpt-ref", tmp_path / "reference", compile_cache_env)
    assert res.returncode == 0, res.stderr
    ref = json.loads((tmp_path / "reference.json").read_text())
    assert ref["initial_step"] == 0
    a, b = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "reference.npz")
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)
    for r1, r2 in zip(resumed["history"]["epochs"], ref["history"]["epochs"], strict=True):
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-5)
        assert r1["val_loss"] == pytest.approx(r2["val_loss"], rel=1e-5)

    # 4. running the finished call once more trains nothing
    res = _run(script, ckpt, tmp_path / "again", compile_cache_env)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "again.json").read_text())["initial_step"] == 60
