"""Data parallel training over 2 (forced host) devices equals single-device training."""

from __future__ import annotations

import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    import optax
    from jaxtx import trainer as jt

    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    n = 530
    x = rng.normal(size=(n, 3)).astype(np.float32)
    ids = rng.integers(0, 4, n).astype(np.int32)
    y = (x[:, 0] + (ids == 1) > 0.3).astype(np.float32)
    feats = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "id": ids}
    result = {}
    for batch_size in (64, 45):  # 45 is not divisible by 2: every batch is padded to 46
        for ndev in (1, 2):
            train = jt.ArrayDataset(feats, y, batch_size=batch_size, shuffle_seed=0)
            ev = jt.ArrayDataset(feats, y, batch_size=100) if batch_size == 64 else None
            model = jt.MLP(hidden=(16, 8), vocab_sizes={"id": 4}, dropout=0.1)
            t = jt.TrainLoop(model, optax.adam(1e-2), loss="bce", devices=jax.devices()[:ndev])
            h = t.fit(train, ev, epochs=2)
            leaf = jax.tree.leaves(t.state.params)[-1]
            assert len(leaf.sharding.device_set) == ndev
            result[f"{batch_size}/{ndev}"] = {
                "params": [np.asarray(p).ravel().tolist() for p in jax.tree.leaves(t.state.params)],
                "loss": h.history["loss"],
                "val_loss": h.history.get("val_loss", []),
            }
    print("RESULT" + json.dumps(result))
    """
)


def test_two_devices_match_one(run_on_two_devices):
    result = run_on_two_devices(SCRIPT, timeout=180)

    for bs in (64, 45):
        one, two = result[f"{bs}/1"], result[f"{bs}/2"]
        for p1, p2 in zip(one["params"], two["params"], strict=True):
            np.testing.assert_allclose(p1, p2, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(one["loss"], two["loss"], rtol=1e-5)
        np.testing.assert_allclose(one["val_loss"], two["val_loss"], rtol=1e-5)
