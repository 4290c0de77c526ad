"""Throughput of ``jaxtx.trainer`` against a hand-written JAX + optax loop (and Keras 3).

All three train the same MLP (20 -> 64 -> 64 -> 1, ReLU, Adam 1e-3, binary
cross-entropy, batch 1024, per-epoch shuffle, last partial batch dropped) on the
same 1M generated rows for two epochs; the second epoch's examples/s is
reported (the first includes compilation).

* jaxtx: ``TrainLoop.fit`` over a ``ParquetDataset`` reading one Parquet file
  written to a temporary directory (reading, shuffling, batching and
  prefetching are part of the measured time). With its defaults the 84 MB of
  decoded rows are kept in memory after the first epoch; the same run with
  ``in_memory=False`` (streaming through the shuffle buffer, as for data
  larger than memory) is reported too. The trainer's defaults also run
  several steps per compiled call (``steps_per_execution=None``: 8 steps of
  1024 rows here); the same run with ``steps_per_execution=1`` is reported
  for comparison;
* hand-written: a jitted ``value_and_grad`` + optax step over in-memory numpy
  arrays, batches gathered with a per-epoch permutation;
* Keras 3 ``fit`` with the JAX backend, when ``keras`` is importable.

Usage::

    python bench/bench_trainer.py [--rows 1000000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pyarrow as pa
import pyarrow.parquet as pq

from jaxtx import trainer as jt

N_FEATURES = 20
BATCH = 1024
HIDDEN = (64, 64)
LR = 1e-3


def make_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features ``float32[rows, 20]`` and 0/1 labels from a noisy nonlinear rule."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES)).astype(np.float32)
    w = rng.normal(size=N_FEATURES).astype(np.float32)
    score = x @ w + 0.5 * np.sin(3 * x[:, 0]) * x[:, 1] + rng.normal(scale=0.5, size=rows)
    return x, (score > 0).astype(np.float32)


def write_parquet(x: np.ndarray, y: np.ndarray, directory: str) -> str:
    """One Parquet file with columns ``f00..f19`` and ``label``."""
    cols = {f"f{i:02d}": x[:, i] for i in range(x.shape[1])}
    cols["label"] = y
    path = os.path.join(directory, "train.parquet")
    pq.write_table(pa.table(cols), path, row_group_size=131_072)
    return path


def bench_jaxtx(
    path: str,
    rows: int,
    in_memory: bool | None = None,
    steps_per_execution: int | None = None,
) -> float:
    """Examples/s of the second epoch of ``TrainLoop.fit`` over a ``ParquetDataset``.

    ``in_memory=None`` is the default (here: decoded once, then served from
    memory); ``False`` forces streaming through the shuffle buffer.
    ``steps_per_execution=None`` is the default (automatic); ``1`` runs one
    step per compiled call.
    """
    features = [f"f{i:02d}" for i in range(N_FEATURES)]
    ds = jt.ParquetDataset(
        path,
        features,
        "label",
        batch_size=BATCH,
        shuffle_seed=0,
        drop_remainder=True,
        in_memory=in_memory,
    )
    trainer = jt.TrainLoop(
        jt.MLP(hidden=HIDDEN, out=1),
        optax.adam(LR),
        loss="binary_crossentropy",
        steps_per_execution=steps_per_execution,
    )
    history = trainer.fit(ds, epochs=2)
    rec = history.epochs[1]
    mode = "streaming" if in_memory is False else "default"
    if steps_per_execution is not None:
        mode += f", steps_per_execution={steps_per_execution}"
    print(f"  jaxtx ({mode}) epoch 2: loss {rec['loss']:.4f} accuracy {rec['accuracy']:.4f}")
    return (rows // BATCH) * BATCH / rec["train_time"]


def bench_hand_written(x: np.ndarray, y: np.ndarray) -> float:
    """Examples/s of the second epoch of a plain jitted JAX + optax loop."""
    dims = [N_FEATURES, *HIDDEN, 1]
    key = jax.random.key(0)
    params = []
    for i in range(len(dims) - 1):
        key, sub = jax.random.split(key)
        w = jax.nn.initializers.glorot_uniform()(sub, (dims[i], dims[i + 1]), jnp.float32)
        params.append((w, jnp.zeros(dims[i + 1], jnp.float32)))
    tx = optax.adam(LR)
    opt_state = tx.init(params)

    def loss_fn(p, xb, yb):
        h = xb
        for w, b in p[:-1]:
            h = jax.nn.relu(h @ w + b)
        w, b = p[-1]
        return optax.sigmoid_binary_cross_entropy((h @ w + b)[:, 0], yb).mean()

    @jax.jit
    def step(p, o, xb, yb):
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, o = tx.update(g, o, p)
        return optax.apply_updates(p, updates), o, loss

    rng = np.random.default_rng(0)
    steps = x.shape[0] // BATCH
    rate = 0.0
    for epoch in range(2):
        t0 = time.perf_counter()
        perm = rng.permutation(x.shape[0])
        total = jnp.zeros(())
        for i in range(steps):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            params, opt_state, loss = step(params, opt_state, x[idx], y[idx])
            total = total + loss
        mean_loss = float(total) / steps
        dt = time.perf_counter() - t0
        rate = steps * BATCH / dt
        if epoch == 1:
            print(f"  hand loop epoch 2: loss {mean_loss:.4f}")
    return rate


def bench_keras(x: np.ndarray, y: np.ndarray) -> float | None:
    """Examples/s of the second epoch of Keras 3 ``fit`` (JAX backend), or ``None``."""
    try:
        import keras
    except ImportError:
        print("  keras not installed")
        return None
    if keras.backend.backend() != "jax":
        print(f"  keras uses the {keras.backend.backend()} backend, not jax; skipped")
        return None
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((N_FEATURES,)),
            *[keras.layers.Dense(h, activation="relu") for h in HIDDEN],
            keras.layers.Dense(1),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LR),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    steps = x.shape[0] // BATCH
    n = steps * BATCH
    hist = model.fit(
        x[:n], y[:n], batch_size=BATCH, epochs=2, shuffle=True, verbose=0, callbacks=[timer]
    )
    print(f"  keras {keras.__version__} epoch 2: loss {hist.history['loss'][1]:.4f}")
    return n / timer.times[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1, help="repeat and keep the best")
    parser.add_argument("--skip-keras", action="store_true")
    args = parser.parse_args(argv)

    print(f"jax {jax.__version__} on {jax.devices()}; {os.cpu_count()} CPUs")
    x, y = make_data(args.rows)
    results: dict[str, list[float]] = {
        "jaxtx": [],
        "hand": [],
        "keras": [],
        "streaming": [],
        "one_step": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = write_parquet(x, y, tmp)
        print(f"{args.rows} rows, {os.path.getsize(path) / 2**20:.1f} MiB of Parquet")
        for r in range(args.repeats):
            print(f"run {r + 1}/{args.repeats}")
            results["hand"].append(bench_hand_written(x, y))
            results["jaxtx"].append(bench_jaxtx(path, args.rows))
            results["streaming"].append(bench_jaxtx(path, args.rows, in_memory=False))
            results["one_step"].append(bench_jaxtx(path, args.rows, steps_per_execution=1))
            if not args.skip_keras:
                k = bench_keras(x, y)
                if k is not None:
                    results["keras"].append(k)
            line = ", ".join(f"{name} {v[-1]:,.0f}" for name, v in results.items() if v)
            print(f"  examples/s: {line}")

    hand = max(results["hand"])
    print("\nsecond-epoch throughput (best of runs):")
    print(f"  hand-written JAX + optax : {hand:12,.0f} examples/s")
    jx = max(results["jaxtx"])
    print(f"  jaxtx Trainer (Parquet)  : {jx:12,.0f} examples/s  ({jx / hand:.3f}x hand-written)")
    st = max(results["streaming"])
    print(f"  jaxtx, streaming Parquet : {st:12,.0f} examples/s  ({st / hand:.3f}x hand-written)")
    one = max(results["one_step"])
    print(f"  jaxtx, 1 step per call   : {one:12,.0f} examples/s  ({one / hand:.3f}x hand-written)")
    if results["keras"]:
        kr = max(results["keras"])
        print(
            f"  Keras 3 fit (JAX)        : {kr:12,.0f} examples/s  ({kr / hand:.3f}x hand-written)"
        )
        print(f"  jaxtx / keras            : {jx / kr:.3f}x")
    ok = jx >= 0.95 * hand
    print(f"target jaxtx >= 0.95x hand-written: {'met' if ok else 'NOT met'}")
    if results["keras"]:
        ok = jx >= 1.1 * max(results["keras"])
        print(f"target jaxtx >= 1.1x Keras: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
