"""Size on disk and latency of an int8 weight-only export against its float original.

One MLP over 20 float features and a 1000-value string feature (embedding 64;
hidden layers 512 -> 256 -> 1) with random weights is exported twice through
``jaxtx.core.model_format``: as is, and through :func:`quantize_predict` (int8
weights, per-channel scales, dequantized inside the program). Reported per
variant: the size of ``predict.jaxexport`` (with its VJP, as ``write_model``
writes it) and of the whole directory, and the median latency of
``LoadedModel.predict`` on raw rows (string lookup included) at batch 1 and 64
(after a warm-up), and the largest probability difference on 1024 rows.

Usage::

    python bench/bench_quantized.py [--repeats 200] [--hidden 512 256]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from jaxtx.core.model_format import (
    LoadedModel,
    export_function,
    make_signature,
    quantize_predict,
    write_model,
    write_quantization,
)

NUMERIC = [f"x{i}" for i in range(20)]
VOCAB = [f"v{i}" for i in range(1000)]


def _params(hidden: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [len(NUMERIC) + 64, *hidden, 1]
    params = {"emb": rng.normal(0, 0.3, (len(VOCAB) + 1, 64)).astype(np.float32)}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        params[f"w{i}"] = (rng.normal(0, 1.0, (a, b)) / np.sqrt(a)).astype(np.float32)
        params[f"b{i}"] = np.zeros(b, np.float32)
    return params


def _predict(params, features):
    x = jnp.stack([features[n] for n in NUMERIC], axis=1)
    x = jnp.concatenate([x, jnp.take(jnp.asarray(params["emb"]), features["cat"], axis=0)], 1)
    layers = len([k for k in params if k.startswith("w")])
    for i in range(layers):
        x = x @ params[f"w{i}"] + params[f"b{i}"]
        if i < layers - 1:
            x = jax.nn.relu(x)
    return {"probabilities": jax.nn.sigmoid(x[:, 0])}


def _write(directory: Path, params, predict_fn) -> LoadedModel:
    (b,) = export.symbolic_shape("b")
    specs = {n: jax.ShapeDtypeStruct((b,), jnp.float32) for n in NUMERIC}
    specs["cat"] = jax.ShapeDtypeStruct((b,), jnp.int32)
    sig = make_signature(
        "bench",
        "binary_classification",
        {**dict.fromkeys(NUMERIC, "float32"), "cat": "string"},
        {"probabilities": "float32"},
    )
    pre = {"cat": {"kind": "vocabulary", "vocabulary": VOCAB, "num_oov_buckets": 1}}
    write_model(directory, export_function(lambda f: predict_fn(params, f), specs), sig, pre)
    return LoadedModel.load(directory)


def _rows(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = {name: rng.normal(size=n).astype(np.float32) for name in NUMERIC}
    rows["cat"] = rng.choice(VOCAB, size=n).astype(object)
    return rows


def _latency_ms(model: LoadedModel, batch: int, repeats: int) -> float:
    rows = _rows(batch, seed=batch)
    model.predict(rows)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(rows)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 256])
    args = parser.parse_args()
    params = _params(args.hidden)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        float_model = _write(root / "float", params, _predict)
        q_fn, q_params, info = quantize_predict(_predict, params)
        int8_model = _write(root / "int8", q_params, q_fn)
        write_quantization(root / "int8", info)
        probe = _rows(1024, seed=7)
        diff = np.max(
            np.abs(
                float_model.predict(probe)["probabilities"]
                - int8_model.predict(probe)["probabilities"]
            )
        )
        print(
            f"MLP {len(NUMERIC)}+emb64 -> {' -> '.join(map(str, args.hidden))} -> 1, "
            f"{jax.default_backend()}, median of {args.repeats} calls"
        )
        print(
            f"quantized {info['num_quantized']} tensors, kept {info['num_kept']}; "
            f"parameter bytes {info['float_bytes']} -> {info['quantized_bytes']}; "
            f"max |p_float - p_int8| on 1024 rows = {diff:.2e}"
        )
        header = f"{'variant':8} {'predict.jaxexport':>18} {'directory':>10} {'batch 1 ms':>11} {'batch 64 ms':>12}"
        print(header)
        for name, model in (("float32", float_model), ("int8", int8_model)):
            folder = root / ("float" if name == "float32" else "int8")
            print(
                f"{name:8} {(folder / 'predict.jaxexport').stat().st_size:>18} {_size(folder):>10} "
                f"{_latency_ms(model, 1, args.repeats):>11.3f} "
                f"{_latency_ms(model, 64, args.repeats):>12.3f}"
            )


if __name__ == "__main__":
    main()
