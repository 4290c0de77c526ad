"""Export with jax.export and load it back, in process and in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import optax
import pytest

from jaxtx import trainer as jt

VOCAB = ["red", "green", "blue"]
PREPROCESS = {
    "color": {"kind": "vocabulary", "vocabulary": VOCAB, "num_oov_buckets": 2, "default": ""}
}

# Uses json, zlib, numpy and jax only: no jaxtx, no training code.
FRESH = textwrap.dedent(
    """
    import json, sys, zlib
    import numpy as np
    import jax

    model_dir, inputs_path = sys.argv[1], sys.argv[2]
    sig = json.load(open(model_dir + "/signature.json"))
    pre = json.load(open(model_dir + "/preprocess.json"))
    exported = jax.export.deserialize(bytearray(open(model_dir + "/predict.jaxexport", "rb").read()))
    raw = json.load(open(inputs_path))

    def ids(values, spec):
        vocab, n = spec["vocabulary"], spec["num_oov_buckets"]
        out = []
        for v in values:
            v = spec["default"] if v is None else v
            out.append(vocab.index(v) if v in vocab
                       else len(vocab) + zlib.crc32(v.encode("utf-8")) % n)
        return np.asarray(out, np.int32)

    results = {}
    for size, rows in raw.items():
        feats = {}
        for spec in sig["inputs"]:
            name = spec["name"]
            if spec["dtype"] == "string":
                feats[name] = ids(rows[name], pre[name])
            else:
                feats[name] = np.asarray(rows[name], np.float32)
        out = exported.call(feats)
        results[size] = {k: np.asarray(v).tolist() for k, v in out.items()}
    assert not any(m == "jaxtx" or m.startswith("jaxtx.") for m in sys.modules)
    print("RESULT" + json.dumps(results))
    """
)


def _color_ids(values):
    vocab = {v: i for i, v in enumerate(VOCAB)}
    return np.asarray(
        [vocab.get(v, 3 + zlib.crc32(v.encode()) % 2) for v in values], dtype=np.int32
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 600
    colors = rng.choice(VOCAB + ["purple"], size=n)
    age = rng.uniform(18, 80, n).astype(np.float32)
    y = ((age > 40) ^ (colors == "red")).astype(np.float32)
    feats = {"age": (age - 45) / 15, "color": _color_ids(colors)}
    model = jt.MLP(hidden=(16,), vocab_sizes={"color": len(VOCAB) + 2})
    t = jt.TrainLoop(model, optax.adam(2e-2), loss="binary_crossentropy")
    h = t.fit(jt.ArrayDataset(feats, y, batch_size=50, shuffle_seed=0), epochs=3)
    sig = jt.make_signature(
        "toy",
        "binary_classification",
        {"age": "float32", "color": "string"},
        {"probabilities": "float32", "logits": "float32"},
    )
    out = tmp_path_factory.mktemp("export") / "model"
    t.export(str(out), sig, preprocess=PREPROCESS, history=h)
    return t, out


def _raw_inputs(n, seed):
    rng = np.random.default_rng(seed)
    return {
        "age": rng.normal(size=n).astype(np.float32).tolist(),
        "color": rng.choice(VOCAB + ["teal", "purple"], size=n).tolist(),
    }


def test_export_files(trained):
    _, out = trained
    assert sorted(os.listdir(out)) == [
        "history.json",
        "predict.jaxexport",
        "preprocess.json",
        "signature.json",
    ]
    sig = json.loads((out / "signature.json").read_text())
    assert sig["format"] == "jaxtx.model/1" and sig["inputs"][1] == {
        "name": "color",
        "dtype": "string",
        "shape": [None],
    }
    assert json.loads((out / "preprocess.json").read_text()) == PREPROCESS
    assert len(json.loads((out / "history.json").read_text())["epochs"]) == 3


def test_round_trip_in_a_fresh_process(trained, tmp_path: Path):
    t, out = trained
    raw = {str(n): _raw_inputs(n, seed=n) for n in (1, 37)}
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps(raw))
    script = tmp_path / "serve.py"
    script.write_text(FRESH)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, str(script), str(out), str(inputs)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT"))[6:])
    loaded = jt.load_exported(out)
    for n in (1, 37):
        rows = raw[str(n)]
        want = t.predict(
            {"age": np.asarray(rows["age"], np.float32), "color": _color_ids(rows["color"])}
        )
        assert np.asarray(got[str(n)]["probabilities"]).shape == (n,)
        np.testing.assert_allclose(
            got[str(n)]["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(got[str(n)]["logits"], want["logits"], rtol=1e-5, atol=1e-5)
        # the bundled loader maps the strings itself
        mine = loaded(
            {"age": np.asarray(rows["age"], np.float32), "color": np.asarray(rows["color"])}
        )
        np.testing.assert_allclose(
            mine["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6
        )


def test_export_errors(trained, tmp_path):
    t, _ = trained
    sig = jt.make_signature(
        "toy", "binary_classification", {"age": "float32", "color": "string"}, {}
    )
    with pytest.raises(ValueError, match="input 'color' is a string but preprocess has no entry"):
        t.export(str(tmp_path / "m1"), sig)
    sig = jt.make_signature(
        "toy", "binary_classification", {"age": "float32", "color": "string"}, {"score": "float32"}
    )
    with pytest.raises(ValueError, match=r"signature outputs \['score'\] are not returned"):
        t.export(str(tmp_path / "m2"), sig, preprocess=PREPROCESS)
    loaded = jt.load_exported(trained[1])
    with pytest.raises(KeyError, match=r"missing input feature\(s\) \['color'\]"):
        loaded({"age": np.zeros(2, np.float32)})
