"""Fixtures for the jaxtx.trainer tests: small synthetic tabular data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

Data = tuple[dict[str, np.ndarray], np.ndarray]


def _binary(n: int, seed: int = 0) -> Data:
    """Five numeric features and one id feature; label = a learnable rule."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    ids = rng.integers(0, 6, size=n).astype(np.int32)
    score = x[:, 0] - 0.8 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + np.where(ids % 2 == 0, 1.0, -1.0)
    feats = {f"x{i}": x[:, i].copy() for i in range(5)}
    feats["cat"] = ids
    return feats, (score > 0).astype(np.float32)


@pytest.fixture
def binary_data() -> Callable[..., Data]:
    """``binary_data(n, seed) -> (features, labels)``."""
    return _binary


@pytest.fixture
def write_parquet(tmp_path: Path) -> Callable[..., list[str]]:
    """``write_parquet(features, labels, shards=1, row_group_size=None, name="part")`` -> paths."""

    def write(
        features: dict[str, np.ndarray],
        labels: np.ndarray | None,
        shards: int = 1,
        row_group_size: int | None = None,
        name: str = "part",
        label_name: str = "label",
    ) -> list[str]:
        n = len(next(iter(features.values())))
        paths = []
        for s, idx in enumerate(np.array_split(np.arange(n), shards)):
            cols = {k: v[idx] for k, v in features.items()}
            if labels is not None:
                cols[label_name] = labels[idx]
            path = tmp_path / f"{name}-{s:05d}-of-{shards:05d}.parquet"
            pq.write_table(pa.table(cols), path, row_group_size=row_group_size)
            paths.append(str(path))
        return paths

    return write


@pytest.fixture(scope="session")
def compile_cache_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for test subprocesses: a shared persistent XLA compilation cache.

    Subprocesses that train the same model compile the same programs; the cache
    lets the later ones skip compilation. The pytest process itself is left alone.
    """
    cache = tmp_path_factory.mktemp("jax-cache")
    return {
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


@pytest.fixture(scope="session")
def run_on_two_devices(compile_cache_env: dict[str, str]) -> Callable[..., dict]:
    """Run a Python script in a subprocess that sees 2 forced host devices; the
    JSON it printed after ``RESULT`` on a line of its own.

    ``run(script, *args, timeout=180)``: ``args`` become the script's ``sys.argv[1:]``.
    """

    def run(script: str, *args: str, timeout: float = 180) -> dict:
        env = {
            **os.environ,
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            **compile_cache_env,
        }
        env.pop("JAX_PLATFORMS", None)
        res = subprocess.run(
            [sys.executable, "-c", script, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT"))
        return json.loads(line[len("RESULT") :])

    return run
