"""Models, steps and the Trainer: determinism, learning, custom pieces."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtx import trainer as jt


def _leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def _datasets(binary_data, n=1200, batch_size=100):
    feats, labels = binary_data(n)
    train = jt.ArrayDataset(feats, labels, batch_size=batch_size, shuffle_seed=0)
    ev_f, ev_l = binary_data(400, seed=1)
    return train, jt.ArrayDataset(ev_f, ev_l, batch_size=400)


def test_mlp_and_wide_and_deep_shapes():
    feats = {"a": jnp.ones(8), "b": jnp.ones((8, 3)), "id": jnp.arange(8, dtype=jnp.int32)}
    mlp = jt.MLP(hidden=(16, 8), out=3, vocab_sizes={"id": 5}, embedding_dim=4)
    p = mlp.init(jax.random.key(0), feats)
    assert p["layers"][0]["w"].shape == (1 + 3 + 4, 16) and p["embed"]["id"].shape == (5, 4)
    assert mlp.apply(p, feats, train=False, key=None).shape == (8, 3)
    wd = jt.WideAndDeep(hidden=(8,), vocab_sizes={"id": 5})
    pw = wd.init(jax.random.key(0), feats)
    assert wd.apply(pw, feats).shape == (8, 1)
    with pytest.raises(ValueError, match="input width of 8 but this batch gives 9"):
        mlp.apply(p, {**feats, "c": jnp.ones(8)}, train=False, key=None)
    with pytest.raises(TypeError, match="id features must be integers"):
        mlp.init(jax.random.key(0), {**feats, "id": jnp.ones(8)})


def test_same_seed_gives_bit_identical_params(binary_data):
    def run(seed):
        train, _ = _datasets(binary_data, n=600)
        model = jt.MLP(hidden=(16, 16), dropout=0.2, vocab_sizes={"cat": 6})
        t = jt.TrainLoop(model, optax.adam(1e-2), loss="bce", seed=seed)
        t.fit(train, epochs=2)
        return _leaves(t.state.params)

    a, b = run(3), run(3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    feats, _ = binary_data(8)
    model, tx = jt.MLP(hidden=(4,)), optax.sgd(0.1)
    s3, s4 = (jt.init_train_state(model, tx, feats, seed=s) for s in (3, 4))
    assert not np.array_equal(s3.params["layers"][0]["w"], s4.params["layers"][0]["w"])


def test_loss_decreases_and_accuracy_is_reported(binary_data, tmp_path):
    train, ev = _datasets(binary_data)
    t = jt.TrainLoop(jt.MLP(hidden=(32, 32), vocab_sizes={"cat": 6}), optax.adam(1e-2), loss="bce")
    h = t.fit(train, ev, epochs=4)
    losses, val = h.history["loss"], h.history["val_accuracy"]
    assert losses[-1] < 0.6 * losses[0]
    assert val[-1] > 0.85
    assert [r["epoch"] for r in h.epochs] == [0, 1, 2, 3] and h.epochs[-1]["step"] == 48
    assert abs(t.evaluate(ev)["loss"] - h.epochs[-1]["val_loss"]) < 1e-6
    h.plot(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    h.save(tmp_path / "history.json")
    assert jt.History.load(tmp_path / "history.json").history == h.history


def test_padded_last_batch_is_weighted_out(binary_data):
    train, ev = _datasets(binary_data, n=300)
    t = jt.TrainLoop(jt.MLP(hidden=(8,)), optax.sgd(0.1), loss="bce")
    t.fit(train, epochs=1)
    f, y = binary_data(400, seed=1)
    whole = t.evaluate(jt.ArrayDataset(f, y, batch_size=400))
    odd = t.evaluate(jt.ArrayDataset(f, y, batch_size=37))  # 10 full batches + 30 padded rows
    assert whole["loss"] == pytest.approx(odd["loss"], rel=1e-5)
    assert whole["accuracy"] == pytest.approx(odd["accuracy"], rel=1e-6)


def test_user_init_apply_model_and_custom_loss(binary_data):
    def init(key, feats):
        n = len(feats)
        return {"w": 0.01 * jax.random.normal(key, (n,)), "b": jnp.zeros(())}

    def apply(params, feats, *, train=False, key=None):
        x = jnp.stack([feats[k].astype(jnp.float32) for k in sorted(feats)], axis=1)
        return x @ params["w"] + params["b"]

    def hinge(out, labels):
        return jnp.maximum(0.0, 1.0 - (2.0 * labels - 1.0) * out)

    train, ev = _datasets(binary_data)
    t = jt.TrainLoop(
        jt.ModelDef(init, apply), optax.adam(5e-2), loss=hinge, metrics={"acc": jt.binary_accuracy}
    )
    h = t.fit(train, ev, epochs=3)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert h.history["val_acc"][-1] > 0.7
    # a tuple (init, apply) works as well
    assert jt.as_model((init, apply)).apply is apply


def test_scalar_loss_is_rejected_with_a_hint(binary_data):
    train, _ = _datasets(binary_data, n=200)
    t = jt.TrainLoop(jt.MLP(hidden=(4,)), optax.sgd(0.1), loss=lambda o, y: jnp.mean(o))
    with pytest.raises(ValueError, match="returned a scalar; .* drop the final mean"):
        t.fit(train, epochs=1)


class _NnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(6, 32, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.l2 = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, f):
        x = jnp.stack([f[f"x{i}"] for i in range(5)] + [f["cat"] % 2 * 1.0], axis=1)
        return self.l2(self.drop(jax.nn.relu(self.l1(x))))


def test_nnx_module_trains(binary_data):
    train, ev = _datasets(binary_data)
    t = jt.TrainLoop(_NnxNet(nnx.Rngs(0, dropout=1)), optax.adam(1e-2), loss="bce")
    h = t.fit(train, ev, epochs=3)
    assert h.history["loss"][-1] < 0.7 * h.history["loss"][0]
    assert h.history["val_accuracy"][-1] > 0.85
    # eval mode is deterministic; train mode uses the step key for dropout
    model = jt.from_nnx(_NnxNet(nnx.Rngs(0, dropout=1)))
    feats, _ = next(iter(train))
    p = model.init(jax.random.key(0), feats)
    e1, e2 = model.apply(p, feats, train=False), model.apply(p, feats, train=False)
    np.testing.assert_array_equal(e1, e2)
    k = jax.random.key(5)
    t1, t2 = model.apply(p, feats, train=True, key=k), model.apply(p, feats, train=True, key=k)
    np.testing.assert_array_equal(t1, t2)
    assert not np.array_equal(t1, e1)
    t3 = model.apply(p, feats, train=True, key=jax.random.key(6))
    assert not np.array_equal(t1, t3)


def test_make_train_step_mixed_precision_and_clipping(binary_data):
    feats, labels = binary_data(256)
    model = jt.MLP(hidden=(16,), vocab_sizes={"cat": 6})
    tx = jt.with_gradient_clipping(optax.adam(1e-2), max_norm=1.0)
    state = jt.init_train_state(model, tx, feats, seed=0)
    step = jt.make_train_step(model, "bce", tx, compute_dtype=jnp.bfloat16)
    batch = jt.Batch(feats, labels)
    first = None
    for _ in range(30):
        state, m = step(state, batch)
        first = first if first is not None else float(m["loss"])
    assert float(m["loss"]) < first
    assert int(state.step) == 30
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
    ev = jt.make_eval_step(model, "bce")(state.params, (feats, labels))
    assert set(ev) == {"loss", "accuracy"}


def test_user_train_step(binary_data):
    model = jt.MLP(hidden=(8,))
    tx = optax.sgd(0.1)
    inner = jt.make_train_step(model, "mse", tx, jit=False)
    calls = []

    def my_step(state, batch):
        calls.append(1)  # traced for the shapes of the sums, then compiled once
        state, metrics = inner(state, batch)
        return state, {**metrics, "twice": 2 * metrics["loss"]}

    train, ev = _datasets(binary_data, n=400)
    t = jt.TrainLoop(model, tx, loss="mse", train_step=my_step)
    h = t.fit(train, ev, epochs=2)
    assert h.epochs[-1]["twice"] == pytest.approx(2 * h.epochs[-1]["loss"], rel=1e-5)
    assert "val_mae" in h.epochs[-1] and len(calls) <= 2


def test_softmax_and_mse_losses():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    ce = jt.softmax_cross_entropy(logits, jnp.array([0, 1]))
    assert ce.shape == (2,) and float(ce[0]) < 0.5
    acc = jt.categorical_accuracy(logits, jnp.array([0, 2]))
    np.testing.assert_array_equal(acc, [1.0, 0.0])
    mse = jt.mean_squared_error(jnp.array([[1.0], [3.0]]), jnp.array([1.0, 1.0]))
    np.testing.assert_allclose(mse, [0.0, 4.0])
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        jt.TrainLoop(jt.MLP(), optax.sgd(0.1), loss="hinge")
    with pytest.raises(ValueError, match="needs a loss"):
        jt.TrainLoop(jt.MLP(), optax.sgd(0.1))
