"""Throughput of ``jaxtx.trainer`` against hand-written JAX + optax loops (and Keras 3).

All train the same MLP (20 -> 64 -> 64 -> 1, ReLU, Adam 1e-3, binary
cross-entropy, batch 1024, per-epoch shuffle, last partial batch dropped) on the
same 1M generated rows for two epochs; the second epoch's examples/s is
reported (the first includes compilation), twice: per second of wall time
and per CPU-second of the process (all its threads), which a machine shared
with other work disturbs less. Each line is run ``--repeats`` times (default
3), interleaved, and the tables give the median and the min-max range.

* jaxtx: ``TrainLoop.fit`` over a ``ParquetDataset`` reading one Parquet file
  written to a temporary directory (reading, shuffling, batching and, on the
  host path, prefetching are part of the measured time):

  - default: the 84 MB of decoded rows fit in memory and in a quarter of the
    device's memory, so ``device_resident="auto"`` places them on the device
    once and runs each epoch as one compiled call;
  - device-resident: the same with ``device_resident=True``;
  - host in-memory: ``device_resident=False``, batches stacked 8 at a time in
    the input thread and copied to the device one call ahead;
  - streaming: ``in_memory=False`` (through the shuffle buffer, as for data
    larger than memory), which is always the host path;
* hand loop: a jitted ``value_and_grad`` + optax step per call over in-memory
  numpy arrays, batches gathered with a per-epoch permutation;
* fused loop: the near-limit line: the rows on the device, each epoch one
  compiled ``lax.scan`` over the batches of a per-epoch permutation (drawn
  with numpy, gathered on the device inside the call);
* Keras 3 ``fit`` with the JAX backend, when ``keras`` is importable.

Usage::

    python bench/bench_trainer.py [--rows 1000000] [--repeats 3] [--skip-keras]
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


Rates = tuple[float, float]
"""Examples per wall-clock second and per CPU-second of the process."""


class _Clock:
    """Wall and process CPU time since :meth:`start`."""

    def start(self) -> None:
        self.t0 = time.perf_counter(), time.process_time()

    def rates(self, examples: int) -> Rates:
        wall = time.perf_counter() - self.t0[0]
        cpu = time.process_time() - self.t0[1]
        return examples / wall, examples / cpu


class _EpochClock(jt.Callback):
    """Times the second epoch (from the end of the first to the end of the second)."""

    def __init__(self, examples: int) -> None:
        self.clock, self.examples, self.rates = _Clock(), examples, (0.0, 0.0)

    def on_epoch_end(self, epoch, state, logs):
        if epoch == 1:
            self.rates = self.clock.rates(self.examples)
        self.clock.start()


def bench_jaxtx(
    path: str,
    rows: int,
    in_memory: bool | None = None,
    device_resident: bool | str = "auto",
) -> Rates:
    """Examples/s of the second epoch of ``TrainLoop.fit`` over a ``ParquetDataset``.

    ``in_memory=None`` is the default (here: decoded once, then served from
    memory); ``False`` forces streaming through the shuffle buffer.
    ``device_resident="auto"`` is the default (here: on the device).
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
        device_resident=device_resident,
    )
    clock = _EpochClock((rows // BATCH) * BATCH)
    history = trainer.fit(ds, epochs=2, callbacks=[clock])
    rec = history.epochs[1]
    mode = "streaming" if in_memory is False else f"device_resident={device_resident!r}"
    where = "device" if trainer.resident else "host"
    print(
        f"  jaxtx ({mode}, rows on the {where}) epoch 2: loss {rec['loss']:.4f} "
        f"accuracy {rec['accuracy']:.4f}"
    )
    return clock.rates


def _init_mlp() -> list[tuple[jax.Array, jax.Array]]:
    dims = [N_FEATURES, *HIDDEN, 1]
    key = jax.random.key(0)
    params = []
    for i in range(len(dims) - 1):
        key, sub = jax.random.split(key)
        w = jax.nn.initializers.glorot_uniform()(sub, (dims[i], dims[i + 1]), jnp.float32)
        params.append((w, jnp.zeros(dims[i + 1], jnp.float32)))
    return params


def _mlp_loss(p, xb, yb):
    h = xb
    for w, b in p[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = p[-1]
    return optax.sigmoid_binary_cross_entropy((h @ w + b)[:, 0], yb).mean()


def _adam_step(tx, p, o, xb, yb):
    loss, g = jax.value_and_grad(_mlp_loss)(p, xb, yb)
    updates, o = tx.update(g, o, p)
    return optax.apply_updates(p, updates), o, loss


def bench_hand_written(x: np.ndarray, y: np.ndarray) -> Rates:
    """Examples/s of the second epoch of a plain jitted JAX + optax loop (a call per step)."""
    params = _init_mlp()
    tx = optax.adam(LR)
    opt_state = tx.init(params)

    @jax.jit
    def step(p, o, xb, yb):
        return _adam_step(tx, p, o, xb, yb)

    rng = np.random.default_rng(0)
    steps = x.shape[0] // BATCH
    rates, clock = (0.0, 0.0), _Clock()
    for epoch in range(2):
        clock.start()
        perm = rng.permutation(x.shape[0])
        total = jnp.zeros(())
        for i in range(steps):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            params, opt_state, loss = step(params, opt_state, x[idx], y[idx])
            total = total + loss
        mean_loss = float(total) / steps
        rates = clock.rates(steps * BATCH)
        if epoch == 1:
            print(f"  hand loop epoch 2: loss {mean_loss:.4f}")
    return rates


def bench_fused(x: np.ndarray, y: np.ndarray) -> Rates:
    """Examples/s of the second epoch of the near-limit loop: one compiled scan per epoch.

    The rows are placed on the device once; each epoch draws a numpy
    permutation, and one call gathers the permuted batches on the device and
    runs the whole epoch as a ``lax.scan`` of the optimizer step.
    """
    params = _init_mlp()
    tx = optax.adam(LR)
    opt_state = tx.init(params)
    steps = x.shape[0] // BATCH
    dx, dy = jax.device_put(x), jax.device_put(y)

    @jax.jit
    def epoch_fn(p, o, xs, ys, perm):
        xb = xs[perm].reshape(steps, BATCH, N_FEATURES)
        yb = ys[perm].reshape(steps, BATCH)

        def body(carry, batch):
            p, o, loss = _adam_step(tx, *carry, *batch)
            return (p, o), loss

        (p, o), losses = jax.lax.scan(body, (p, o), (xb, yb))
        return p, o, losses.mean()

    rng = np.random.default_rng(0)
    rates, clock = (0.0, 0.0), _Clock()
    for epoch in range(2):
        clock.start()
        perm = rng.permutation(x.shape[0])[: steps * BATCH].astype(np.int32)
        params, opt_state, loss = epoch_fn(params, opt_state, dx, dy, perm)
        mean_loss = float(loss)
        rates = clock.rates(steps * BATCH)
        if epoch == 1:
            print(f"  fused loop epoch 2: loss {mean_loss:.4f}")
    return rates


def bench_keras(x: np.ndarray, y: np.ndarray) -> Rates | None:
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
            self.clock, self.rates = _Clock(), (0.0, 0.0)

        def on_epoch_begin(self, epoch, logs=None):
            self.clock.start()

        def on_epoch_end(self, epoch, logs=None):
            self.rates = self.clock.rates(n)

    steps = x.shape[0] // BATCH
    n = steps * BATCH
    timer = Timer()
    hist = model.fit(
        x[:n], y[:n], batch_size=BATCH, epochs=2, shuffle=True, verbose=0, callbacks=[timer]
    )
    print(f"  keras {keras.__version__} epoch 2: loss {hist.history['loss'][1]:.4f}")
    return timer.rates


LINES = {
    "jaxtx": "jaxtx default",
    "streaming": "jaxtx streaming (host path)",
    "host": "jaxtx host in-memory",
    "resident": "jaxtx device-resident",
    "hand": "hand loop (call per step)",
    "fused": "fused loop (scan per epoch)",
    "keras": "Keras 3 fit (JAX)",
}


def _table(results: dict[str, list[Rates]], which: int, title: str) -> float:
    """Print median (min-max) of ``rates[which]`` per line; return jaxtx default / fused."""
    fused = float(np.median([r[which] for r in results["fused"]]))
    print(f"\n{title}, median of {len(results['fused'])} (min - max):")
    print(f"  {'':30s} {'median':>12s}  {'min - max':>25s}  {'/ fused':>7s}")
    for name, label in LINES.items():
        v = [r[which] for r in results[name]]
        if not v:
            continue
        med = float(np.median(v))
        span = f"{min(v):,.0f} - {max(v):,.0f}"
        print(f"  {label:30s} {med:12,.0f}  {span:>25s}  {med / fused:7.3f}")
    return float(np.median([r[which] for r in results["jaxtx"]])) / fused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per line (median reported)")
    parser.add_argument("--skip-keras", action="store_true")
    args = parser.parse_args(argv)

    print(f"jax {jax.__version__} on {jax.devices()}; {os.cpu_count()} CPUs")
    x, y = make_data(args.rows)
    results: dict[str, list[Rates]] = {name: [] for name in LINES}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_parquet(x, y, tmp)
        print(f"{args.rows} rows, {os.path.getsize(path) / 2**20:.1f} MiB of Parquet")
        for r in range(args.repeats):  # interleaved, so that load changes hit every line
            print(f"run {r + 1}/{args.repeats}")
            results["fused"].append(bench_fused(x, y))
            results["jaxtx"].append(bench_jaxtx(path, args.rows))
            results["resident"].append(bench_jaxtx(path, args.rows, device_resident=True))
            results["host"].append(bench_jaxtx(path, args.rows, device_resident=False))
            results["streaming"].append(bench_jaxtx(path, args.rows, in_memory=False))
            results["hand"].append(bench_hand_written(x, y))
            if not args.skip_keras:
                k = bench_keras(x, y)
                if k is not None:
                    results["keras"].append(k)
            line = ", ".join(f"{name} {v[-1][0]:,.0f}" for name, v in results.items() if v)
            print(f"  examples/s: {line}")

    wall = _table(results, 0, "second-epoch examples per second (wall clock)")
    cpu = _table(results, 1, "second-epoch examples per CPU-second (all threads)")
    print(f"\njaxtx default / fused loop: {wall:.3f}x wall clock, {cpu:.3f}x CPU time")
    print(f"target jaxtx >= 0.95x fused loop (wall clock): {'met' if wall >= 0.95 else 'NOT met'}")
    if results["keras"]:
        jx = np.median([r[0] for r in results["jaxtx"]])
        print(f"jaxtx default / Keras: {jx / np.median([r[0] for r in results['keras']]):.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
