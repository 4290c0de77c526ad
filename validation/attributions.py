"""Feature attributions of an exported model on raw features, overall and per slice.

:func:`feature_attributions` explains the score a ``jaxtx.model/1`` export
gives each row (the ``probabilities`` output for classification, of the
predicted class for multiclass; ``predictions`` for regression) in terms of the
raw features a client sends, through the exported transform and model:

* **float inputs: integrated gradients** (Sundararajan et al., 2017) with
  respect to the raw value, from a baseline (by default the median of the
  evaluated rows) to the row's value, all float inputs moved together along a
  straight path, ``steps`` midpoint Riemann steps; the gradients are JAX's,
  through the exported function (its serialized VJP, see
  :func:`jaxtx.core.model_format.write_model`). With the other features held
  at the row's values, the float attributions of a row sum to
  ``f(x) - f(x with every float input at its baseline)`` up to the Riemann
  error (``"completeness_gap"`` reports the mean absolute gap). A missing
  (NaN) value has no path from the baseline; it is attributed by occlusion.
* **string and integer inputs: occlusion to a baseline.** The exported program
  takes their integer ids (``preprocess.json``), not an embedding it exposes,
  so their attribution is ``f(x) - f(x with the feature at its baseline)``,
  the baseline being the most frequent value of the evaluated rows. Every
  argument derived from one raw string input (vocabulary and hash entries)
  moves together.
* An export without a VJP (written with ``vjp_order=0``, or before it was the
  default) is explained by occlusion for every feature; ``"method"`` says so.

The document (``jaxtx.attributions/1``)::

    {"format": "jaxtx.attributions/1", "output": "probabilities", "num_rows": 1000,
     "steps": 32, "seed": 0, "completeness_gap": 0.0004,
     "features": [{"name": "age", "method": "integrated_gradients", "baseline": 37.0},
                  {"name": "workclass", "method": "occlusion", "baseline": "Private"}],
     "slices": [{"slice": {}, "name": "overall", "spec": [], "size": 1000,
                 "mean_abs_attribution": {"age": 0.061, "workclass": 0.012}}, ...],
     "skipped_slices": [{"slice": {"sex": "X"}, "name": "sex=X", "size": 3, "reason": "..."}]}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .evaluation import _normalize_specs, _python_value, _slices, slice_name
from .model_scoring import score_key

__all__ = ["FORMAT", "attribution_matrix", "feature_attributions"]

FORMAT = "jaxtx.attributions/1"
_CELLS = 8192  # rows x steps evaluated per gradient call


@dataclass(frozen=True)
class Attributions:
    """Per-row attributions: ``values[i, j]`` of row ``i`` to feature ``names[j]``."""

    names: list[str]
    values: np.ndarray
    methods: dict[str, str]
    baselines: dict[str, Any]
    rows: np.ndarray
    output: str
    completeness_gap: float | None


def _argument_features(model: Any, arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Exported-function argument -> the raw signature input it comes from."""
    out = {}
    for arg in arrays:
        lookup = model.lookups.get(arg)
        out[arg] = (lookup.source or arg) if lookup is not None else arg
    return out


def _score_fn(model: Any, task: str, output: str):
    """``f(args) -> [b]`` score of the exported function (jnp in, jnp out)."""
    import jax.numpy as jnp

    names = model.signature.output_names

    def score(args: Mapping[str, Any], pick: Any | None = None) -> Any:
        result = model.exported.call(dict(args))
        if not isinstance(result, Mapping):
            result = dict(
                zip(names, result if isinstance(result, list | tuple) else [result], strict=False)
            )
        values = jnp.reshape(result[output], (result[output].shape[0], -1))
        if pick is None:
            return values[:, 0]
        return jnp.take_along_axis(values, pick[:, None], axis=1)[:, 0]

    return score


def _chunks(n: int, size: int) -> Iterable[np.ndarray]:
    for start in range(0, n, size):
        yield np.arange(start, min(n, start + size))


def _take(arrays: Mapping[str, np.ndarray], rows: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Rows of every argument, padded (repeating the first row) to ``size`` rows."""
    padded = np.concatenate([rows, np.repeat(rows[:1], size - rows.size)])
    return {k: v[padded] for k, v in arrays.items()}


class _Scorer:
    """Batched, fixed-shape evaluation of the score and of its gradients."""

    def __init__(self, model: Any, task: str, output: str, chunk: int) -> None:
        import jax

        self.chunk = chunk
        score = _score_fn(model, task, output)
        self._score = jax.jit(score)

        def total(floats, others, pick):
            return score({**others, **floats}, pick).sum()

        self._grad = jax.jit(jax.grad(total))

    def scores(self, arrays: Mapping[str, np.ndarray], pick: np.ndarray | None) -> np.ndarray:
        n = next(iter(arrays.values())).shape[0]
        parts = []
        for rows in _chunks(n, self.chunk):
            args = _take(arrays, rows, self.chunk)
            p = None if pick is None else _take({"p": pick}, rows, self.chunk)["p"]
            parts.append(np.asarray(self._score(args, p))[: rows.size])
        return np.concatenate(parts).astype(np.float64)

    def gradients(
        self, floats: Mapping[str, np.ndarray], others: Mapping[str, np.ndarray], pick
    ) -> dict[str, np.ndarray]:
        n = next(iter(floats.values())).shape[0]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in floats}
        for rows in _chunks(n, self.chunk):
            f = _take(floats, rows, self.chunk)
            o = _take(others, rows, self.chunk)
            p = None if pick is None else _take({"p": pick}, rows, self.chunk)["p"]
            grads = self._grad(f, o, p)
            for k in floats:
                parts[k].append(np.asarray(grads[k], dtype=np.float64)[: rows.size])
        return {k: np.concatenate(v) for k, v in parts.items()}


def _has_vjp(model: Any) -> bool:
    has = getattr(model.exported, "has_vjp", None)
    return bool(has()) if callable(has) else False


def _baselines(
    arrays: Mapping[str, np.ndarray],
    table: Any,
    groups: Mapping[str, list[str]],
    floats: Sequence[str],
    given: Mapping[str, float],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per feature: the baseline value of each of its arguments, and a readable baseline."""
    per_arg: dict[str, np.ndarray] = {}
    shown: dict[str, Any] = {}
    for feature, args in groups.items():
        if feature in floats:
            column = arrays[args[0]].astype(np.float64)
            value = given.get(feature)
            if value is None:
                finite = column[np.isfinite(column)]
                value = float(np.median(finite)) if finite.size else 0.0
            per_arg[args[0]] = np.asarray(value, dtype=arrays[args[0]].dtype)
            shown[feature] = float(value)
            continue
        ids = arrays[args[0]].reshape(arrays[args[0]].shape[0], -1)
        uniques, inverse, counts = np.unique(ids, axis=0, return_inverse=True, return_counts=True)
        row = int(np.flatnonzero(inverse.reshape(-1) == int(np.argmax(counts)))[0])
        for arg in args:
            per_arg[arg] = arrays[arg][row]
        raw = table.column(feature)[row].as_py() if feature in table.column_names else None
        shown[feature] = _python_value(raw)
    return per_arg, shown


def _integrated_gradients(
    scorer: _Scorer,
    arrays: Mapping[str, np.ndarray],
    floats: Sequence[str],
    base: Mapping[str, np.ndarray],
    pick: np.ndarray | None,
    steps: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """IG of each float argument (NaN entries at the baseline) and the completeness target."""
    n = next(iter(arrays.values())).shape[0]
    start = {k: np.broadcast_to(base[k], arrays[k].shape).astype(np.float64) for k in floats}
    end = {k: np.where(np.isfinite(arrays[k]), arrays[k], start[k]) for k in floats}
    alphas = (np.arange(steps) + 0.5) / steps
    others = {k: v for k, v in arrays.items() if k not in floats}
    rep = {k: np.repeat(v, steps, axis=0) for k, v in others.items()}
    alpha = np.tile(alphas, n)
    path = {}
    for k in floats:
        shaped = alpha.reshape((n * steps,) + (1,) * (start[k].ndim - 1))
        delta = np.repeat(end[k] - start[k], steps, axis=0)
        path[k] = (np.repeat(start[k], steps, axis=0) + shaped * delta).astype(arrays[k].dtype)
    rep_pick = None if pick is None else np.repeat(pick, steps)
    grads = scorer.gradients(path, rep, rep_pick)
    ig = {}
    for k in floats:
        mean_grad = grads[k].reshape((n, steps) + grads[k].shape[1:]).mean(axis=1)
        ig[k] = ((end[k] - start[k]) * mean_grad).reshape(n, -1).sum(axis=1)
    at_end = scorer.scores({**others, **{k: end[k].astype(arrays[k].dtype) for k in floats}}, pick)
    at_start = scorer.scores(
        {**others, **{k: start[k].astype(arrays[k].dtype) for k in floats}}, pick
    )
    return ig, at_end - at_start


def attribution_matrix(
    model: Any,
    table: Any,
    *,
    task: str,
    baselines: Mapping[str, float] | None = None,
    steps: int = 32,
    max_rows: int | None = 1000,
    seed: int = 0,
) -> Attributions:
    """Attributions of every raw feature for (a seeded sample of) the rows of a table.

    Args:
      model: a :class:`jaxtx.core.model_format.LoadedModel`.
      table: a ``pyarrow.Table`` holding the model's raw inputs.
      task: picks the explained output (see the module docstring).
      baselines: raw baseline values of float inputs (default: their median).
      steps: Riemann steps of integrated gradients.
      max_rows: explain at most this many rows (a seeded sample); None: all.
      seed: seed of the sample.

    Returns:
      An :class:`Attributions` (``rows`` are the table rows explained).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    n_all = table.num_rows
    rows = np.arange(n_all)
    if max_rows is not None and n_all > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n_all, size=max_rows, replace=False))
    sample = table.take(rows)
    arrays = {k: np.asarray(v) for k, v in model.prepare(sample).items()}
    arg_features = _argument_features(model, arrays)
    groups: dict[str, list[str]] = {}
    for arg, feature in arg_features.items():
        groups.setdefault(feature, []).append(arg)
    differentiable = _has_vjp(model)
    floats = [
        f
        for f, args in groups.items()
        if differentiable and len(args) == 1 and arrays[args[0]].dtype.kind == "f"
    ]
    float_args = [groups[f][0] for f in floats]
    base_args, shown = _baselines(arrays, sample, groups, floats, dict(baselines or {}))
    output = score_key(model.signature.output_names, task)
    chunk = max(1, _CELLS // steps) * steps
    scorer = _Scorer(model, task, output, chunk)
    pick = None
    full = scorer.scores(arrays, None)
    if task == "multiclass_classification":
        probs = model.predict_arrays(arrays)[output]
        pick = np.asarray(probs).reshape(len(rows), -1).argmax(axis=1).astype(np.int32)
        full = scorer.scores(arrays, pick)
    names = list(groups)
    values = np.zeros((len(rows), len(names)))
    methods = {}
    gap = None
    if floats:
        ig, target = _integrated_gradients(scorer, arrays, float_args, base_args, pick, steps)
        gap = float(np.mean(np.abs(sum(ig.values()) - target)))
    for j, feature in enumerate(names):
        args = groups[feature]
        if feature in floats:
            methods[feature] = "integrated_gradients"
            values[:, j] = ig[args[0]]
            missing = ~np.isfinite(arrays[args[0]].reshape(len(rows), -1)).all(axis=1)
        else:
            methods[feature] = "occlusion"
            missing = np.ones(len(rows), dtype=bool)
        if missing.any():
            moved = dict(arrays)
            for arg in args:
                moved[arg] = np.broadcast_to(base_args[arg], arrays[arg].shape).copy()
            occluded = full - scorer.scores(moved, pick)
            values[missing, j] = occluded[missing]
    return Attributions(names, values, methods, shown, rows, output, gap)


def feature_attributions(
    model: Any,
    table: Any,
    *,
    task: str,
    features: Mapping[str, Any] | None = None,
    slicing_specs: Iterable[Sequence[str] | str] = ((),),
    min_slice_size: int = 1,
    baselines: Mapping[str, float] | None = None,
    steps: int = 32,
    max_rows: int | None = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean absolute attribution per raw feature, overall and per slice.

    Args:
      model: a :class:`jaxtx.core.model_format.LoadedModel`.
      table: a ``pyarrow.Table`` holding the model's raw inputs.
      task: ``binary_classification``, ``multiclass_classification`` or ``regression``.
      features: slicing feature name -> ``[table.num_rows]`` values.
      slicing_specs: as :func:`jaxtx.validation.evaluation.evaluate`.
      min_slice_size: slices with fewer explained rows are skipped.
      baselines: raw baseline values of float inputs (default: their median).
      steps: Riemann steps of integrated gradients.
      max_rows: explain at most this many rows (a seeded sample); None: all.
      seed: seed of the sample.

    Returns:
      A ``jaxtx.attributions/1`` document (see the module docstring).
    """
    result = attribution_matrix(
        model, table, task=task, baselines=baselines, steps=steps, max_rows=max_rows, seed=seed
    )
    n = len(result.rows)
    sampled = {k: np.asarray(v, dtype=object)[result.rows] for k, v in (features or {}).items()}
    slices, skipped = [], []
    for spec, key, idx in _slices(_normalize_specs(slicing_specs), sampled, n):
        entry: dict[str, Any] = {"slice": key, "name": slice_name(key), "spec": list(spec)}
        entry["size"] = int(idx.size)
        if idx.size < max(1, int(min_slice_size)):
            entry["reason"] = (
                f"{idx.size} explained rows, fewer than min_slice_size={min_slice_size}"
            )
            skipped.append(entry)
            continue
        means = np.abs(result.values[idx]).mean(axis=0)
        entry["mean_abs_attribution"] = {
            name: float(means[j]) for j, name in enumerate(result.names)
        }
        slices.append(entry)
    return {
        "format": FORMAT,
        "output": result.output,
        "num_rows": n,
        "steps": int(steps),
        "seed": int(seed),
        "completeness_gap": result.completeness_gap,
        "features": [
            {"name": f, "method": result.methods[f], "baseline": result.baselines[f]}
            for f in result.names
        ],
        "slices": slices,
        "skipped_slices": skipped,
    }
