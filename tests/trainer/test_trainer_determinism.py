"""Same transformed data, seed and parameters -> identical parameters and exported model.

Each configuration runs in a fresh interpreter: one device, and two forced host
devices (``--xla_force_host_platform_device_count=2``, data parallel). Within a
configuration two trainings must give bit-identical parameters and byte-identical
exported programs (``predict.jaxexport``) and model directories.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    from pathlib import Path

    import jax
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import jaxtx.trainer as jt
    import jaxtx.trainer.transform as tx

    work, ndev = Path(sys.argv[1]), int(sys.argv[2])
    assert jax.device_count() == ndev, jax.devices()
    rng = np.random.default_rng(0)
    n = 700
    x = rng.normal(size=n)
    c = rng.choice(["a", "b", "c"], n)
    y = ((x > 0) ^ (c == "b")).astype(np.float32)
    raw = work / "raw.parquet"
    pq.write_table(pa.table({"x": x, "c": c, "label": y}), raw)

    def preprocess(inputs):
        return {
            "x": tx.scale_to_z_score(inputs["x"]),
            "xb": tx.bucketize(inputs["x"], num_buckets=4),
            "c": tx.vocabulary(inputs["c"], num_oov_buckets=1),
        }

    graph = tx.analyze(preprocess, raw, use_beam=False)
    tx.transform_parquet(graph, {"train": [str(raw)]}, work / "t", passthrough=["label"],
                         use_beam=False)
    files = [str(p) for p in sorted((work / "t" / "train").glob("*.parquet"))]

    def digest(path):
        h = hashlib.sha256()
        for f in sorted(Path(path).rglob("*")):
            if f.is_file():
                h.update(str(f.relative_to(path)).encode() + b"\\0" + f.read_bytes())
        return h.hexdigest()

    out = []
    for i in range(2):
        r = jt.train_transformed(graph, files, files, label="label", epochs=2, batch_size=64,
                                 seed=3, early_stopping_patience=None,
                                 model_def=jt.MLP(hidden=(16, 8), dropout=0.1))
        leaves = jax.tree.leaves(r.loop.state.params)
        assert len(leaves[-1].sharding.device_set) == ndev
        params = hashlib.sha256(b"".join(np.asarray(p).tobytes() for p in leaves)).hexdigest()
        d = work / f"model-{i}"
        tx.export_transformed_model(graph, r.loop.predict_fn, r.loop.state.params, d,
                                    name="m", task="binary_classification")
        program = hashlib.sha256((d / "predict.jaxexport").read_bytes()).hexdigest()
        out.append({"params": params, "program": program, "model_dir": digest(d),
                    "loss": r.history.history["loss"]})
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.parametrize("num_devices", [1, 2])
def test_same_seed_gives_identical_params_and_exported_program(
    num_devices: int, tmp_path: Path, compile_cache_env: dict[str, str]
) -> None:
    env = {**os.environ, **compile_cache_env}
    env.pop("JAX_PLATFORMS", None)
    if num_devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    else:
        env.pop("XLA_FLAGS", None)
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(num_devices)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT"))
    first, second = json.loads(line[len("RESULT") :])
    assert first == second
    assert first["loss"][-1] < first["loss"][0]
