"""Transform: preprocessing written once, fitted with Beam, applied the same way everywhere.

A preprocessing function maps named raw columns to model features::

    import jaxtx.trainer.transform as tx

    def preprocess(inputs):
        return {
            "age": tx.scale_to_z_score(tx.fill_missing(inputs["age"], "mean")),
            "hours": tx.scale_to_0_1(inputs["hours_per_week"]),
            "gain": tx.log1p(inputs["capital_gain"]),
            "age_bucket": tx.bucketize(inputs["age"], num_buckets=10),
            "workclass": tx.vocabulary(inputs["workclass"], top_k=20, frequency_threshold=5),
            "occupation_hash": tx.hash_strings(inputs["occupation"], num_buckets=16),
            "edu": inputs["education_num"] * 1.0 + 0,
        }

    graph = tx.analyze(preprocess, "data/train")       # Beam, one pass per stage
    graph.save("transform")                            # transform/transform_graph.json
    tx.transform_parquet(graph, {"train": files}, "out", passthrough=["label"])  # Beam
    features = graph.apply_numpy({"age": ..., ...})    # training data
    table = graph.apply_table(record_batch)            # one Arrow batch
    pcoll | tx.TransformBatches(graph)                 # in your own Beam pipeline
    ids = graph.string_preprocess()                    # preprocess.json entries
    out = jax.jit(graph.jax_fn)(numbers_and_ids)       # inside the exported model

:func:`analyze` runs the function once on symbolic :class:`Column` objects to
record a small graph of operations, then fits its analyzers (mean/std,
min/max, quantiles, vocabularies, most frequent values) in one full pass over
the training data, as a Beam ``CombineGlobally`` over record batches
(``import jaxtx.trainer.transform`` does not load Beam; running does). An
analyzer reads the *derived* values it is applied to (``scale_to_z_score`` of
a filled column sees the filled values); when its input depends on another
analyzer's result it runs in a later pass (stage), so a graph takes
``graph.num_stages`` passes: one unless analyzers are stacked like that.

Applying the graph: :meth:`FittedTransform.apply_numpy` and
:meth:`FittedTransform.apply_table` run in NumPy; for serving, string columns
become int32 ids before the model (:meth:`FittedTransform.string_preprocess`,
the ``preprocess.json`` format of ``jaxtx.core.model_format``) and the numeric
rest runs in JAX (:meth:`FittedTransform.jax_fn`), inside the exported model
(:func:`export_transformed_model`). The paths agree bit for bit: each float
operation rounds to float32 on its own in both (see ``_math``).

Semantics worth knowing:

* numeric columns are float32; missing values are NaN and propagate; the
  analyzers ignore NaN and infinities;
* division by a number multiplies by its float32 reciprocal;
* missing strings without :func:`fill_missing` are looked up as ``""``;
* ids are final outputs: they cannot feed arithmetic.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._apply import apply_batch, transform_parquet
from ._fit import DataLike, DataSource, fit, open_source
from ._graph import (
    FORMAT,
    GRAPH_FILE,
    Analyzer,
    FittedTransform,
    InputColumn,
    Op,
    OutputColumn,
    TransformError,
)
from ._trace import (
    Column,
    bucketize,
    clip,
    fill_missing,
    hash_strings,
    log1p,
    scale_to_0_1,
    scale_to_z_score,
    trace,
    vocabulary,
)

if TYPE_CHECKING:
    from jaxtx.core.beam import BeamOptions

    from ._beam import TransformBatches

__all__ = [
    "FORMAT",
    "GRAPH_FILE",
    "Analyzer",
    "Column",
    "DataSource",
    "InputColumn",
    "Op",
    "OutputColumn",
    "TransformError",
    "TransformBatches",
    "FittedTransform",
    "analyze",
    "apply_batch",
    "bucketize",
    "clip",
    "export_transformed_model",
    "fill_missing",
    "hash_strings",
    "log1p",
    "open_source",
    "scale_to_0_1",
    "scale_to_z_score",
    "trace",
    "transform_parquet",
    "vocabulary",
]


_DEPRECATED = {"TransformGraph": "FittedTransform", "Node": "Op"}
"""Old names kept for one release (they collided with ``jaxtx.components``' names)."""


def __getattr__(name: str) -> Any:
    # Beam is loaded on first use, not by writing a preprocessing function.
    if name == "TransformBatches":
        from ._beam import TransformBatches

        return TransformBatches
    if name in _DEPRECATED:
        import warnings

        new = _DEPRECATED[name]
        warnings.warn(
            f"jaxtx.trainer.transform.{name} is deprecated; use {new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PreprocessingFn = Callable[[Mapping[str, Column]], Mapping[str, Column]]


def analyze(
    preprocessing_fn: PreprocessingFn,
    data: DataLike,
    *,
    beam_options: BeamOptions = None,
    use_beam: bool = True,
    batch_size: int = 65536,
    kll_k: int = 200,
    temp_dir: str | None = None,
) -> FittedTransform:
    """Trace ``preprocessing_fn`` and fit its analyzers over the training data.

    Args:
        preprocessing_fn: ``fn(inputs) -> {output name: Column}``; ``inputs``
            maps each raw column name to a symbolic :class:`Column`.
        data: Parquet file(s), a directory of them, a glob, or a ``pa.Table``.
        beam_options: Beam flags or mapping, e.g. ``["--runner=FlinkRunner",
            ...]``; the in-process ``FnApiRunner`` by default.
        use_beam: ``False`` fits in this process instead (small data, tests).
        batch_size: Rows per record batch.
        kll_k: Size of the quantile summaries (bucketize, median): exact up
            to 65536 values, beyond a deterministic rank error below
            ``1 / kll_k`` (0.5% for the default 200).
        temp_dir: Where each pipeline writes its result; must be reachable
            by the workers and this process (default: a local temporary
            directory).

    Returns:
        The fitted graph.

    Raises:
        TransformError: A column the function uses is missing (the message
            names the file or table and lists its columns), an operation gets
            the wrong kind of column (naming the output and the operation),
            the data has no rows, or an analyzer saw no values.

    Example:
        >>> graph = analyze(preprocess, "data/train")  # doctest: +SKIP
        >>> [c.name for c in graph.output_columns]  # doctest: +SKIP
        ['age', 'hours', ...]
    """
    source = open_source(data)
    graph = trace(preprocessing_fn, source.schema, source=source.description)
    return fit(
        graph,
        source,
        beam_options=beam_options,
        use_beam=use_beam,
        batch_size=batch_size,
        kll_k=kll_k,
        temp_dir=temp_dir,
    )


def export_transformed_model(
    graph: FittedTransform,
    predict_fn: Callable[[Any, Mapping[str, Any]], Mapping[str, Any]],
    params: Any,
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    task: str,
    outputs: Mapping[str, str] | None = None,
    platforms: Sequence[str] | None = None,
) -> str:
    """Export ``predict(raw) = predict_fn(params, graph.jax_fn(ids and numbers))``.

    Writes a ``jaxtx.model/1`` directory (through ``jaxtx.core.model_format``):
    ``predict.jaxexport`` (symbolic batch ``b``; transform constants and
    parameters baked in), ``signature.json`` (the raw columns: float32 or
    string), ``preprocess.json`` (:meth:`TransformGraph.string_preprocess`)
    and a copy of ``transform_graph.json``.

    Args:
        graph: The fitted graph.
        predict_fn: ``predict_fn(params, features) -> {output: array[b, ...]}``
            taking the graph's outputs as ``features``.
        params: Model parameters (baked in as constants).
        out_dir: Directory to write (created when missing).
        name: Model name.
        task: E.g. ``"binary_classification"``.
        outputs: ``{output: dtype}`` to list in the signature (default: all
            that ``predict_fn`` returns).
        platforms: Lowering platforms (default: ``cpu`` plus the current backend).

    Returns:
        ``out_dir``.

    Example:
        >>> export_transformed_model(graph, trainer.predict_fn, trainer.state.params,
        ...                          "model/1", name="census", task="binary_classification")
        ... # doctest: +SKIP
    """
    import jax

    from jaxtx.core.model_format import export_function, output_avals, write_model

    out = os.fspath(out_dir)
    host_params = jax.tree.map(np.asarray, jax.device_get(params))

    def predict(inputs: Mapping[str, Any]) -> dict[str, Any]:
        return dict(predict_fn(host_params, graph.jax_fn(inputs)))

    try:
        exported = export_function(predict, graph.jax_input_specs("b"), platforms)
    except TypeError as exc:
        raise TransformError(str(exc)) from exc
    out_avals = output_avals(exported)
    if outputs is None:
        outputs = {k: str(v.dtype) for k, v in out_avals.items()}
    missing = [k for k in outputs if k not in out_avals]
    if missing:
        raise TransformError(
            f"outputs {missing} are not returned by predict_fn (it returns {sorted(out_avals)})"
        )
    signature = {
        "name": name,
        "task": task,
        "inputs": [
            {"name": k, "dtype": v, "shape": [None]} for k, v in graph.serving_inputs.items()
        ],
        "outputs": [
            {"name": k, "dtype": v, "shape": [None, *map(int, out_avals[k].shape[1:])]}
            for k, v in outputs.items()
        ],
    }
    write_model(out, exported, signature, graph.string_preprocess())
    graph.save(out)
    return out
