"""jaxtx.trainer: train JAX models on tabular data, pure JAX and optax.

Small pieces that compose:

* models: :class:`MLP`, :class:`WideAndDeep`, any ``(init, apply)`` pair as a
  :class:`ModelDef`, or a Flax NNX module (:func:`from_nnx`);
* state and steps: :class:`TrainState`, :func:`make_train_step`,
  :func:`make_eval_step`, losses, :func:`with_gradient_clipping`;
* input: :class:`ParquetDataset` and :class:`ArrayDataset` (shuffled numpy
  batches, prefetched in a background thread);
* the loop: :class:`TrainLoop` with callbacks (:class:`EarlyStopping`,
  :class:`Checkpoint`, :class:`ProgressBar`, :class:`LearningRateLogger`,
  :class:`MetricsCallback`) returning a :class:`History`;
* export: :func:`export_model` (``jax.export`` with a symbolic batch) and
  :func:`load_exported`.

Example::

    import optax
    from jaxtx import trainer as jt

    train = jt.ParquetDataset("data/train", ["age", "hours", "workclass"], "label",
                              batch_size=512, shuffle_seed=0)
    evald = jt.ParquetDataset("data/eval", ["age", "hours", "workclass"], "label",
                              batch_size=2048)
    model = jt.MLP(hidden=(64, 64), vocab_sizes={"workclass": 10})
    t = jt.TrainLoop(model, optax.adam(1e-3), loss="binary_crossentropy")
    history = t.fit(train, evald, epochs=10, callbacks=[
        jt.EarlyStopping("val_loss", patience=2),
        jt.Checkpoint("ckpt", every_n_steps=1000),
    ])
    history.plot("curves.png")
    t.export("model", jt.make_signature("census", "binary_classification",
             {"age": "float32", "hours": "float32", "workclass": "string"},
             {"probabilities": "float32", "logits": "float32"}),
             preprocess={"workclass": {"kind": "vocabulary", "vocabulary": [...],
                                       "num_oov_buckets": 1}})

Devices: the :class:`TrainLoop` splits each batch over all devices with a
``jax.sharding.Mesh`` (axis ``"data"``) and replicates the parameters; one
device works the same way. Reproducibility: the same ``seed`` gives
bit-identical parameters on the same machine (initialisation from
``jax.random.key(seed)``, dropout from ``fold_in(rng, step)``, data order from
``(shuffle_seed, epoch)``).

Several processes (:mod:`jaxtx.trainer.distributed`): every process calls
``distributed.initialize()`` before anything else touches JAX (on this
machine ``distributed.launch("pkg.mod:main", processes=2)`` starts and
supervises them; on a cluster each host runs ``python -m
jaxtx.trainer.worker``). The mesh then spans the devices of all processes;
given the whole dataset, each process feeds its rows of every global batch
(:class:`~jaxtx.trainer.distributed.ProcessShard`), which the loop assembles
into global arrays (``jax.make_array_from_process_local_data``), so the
batches are those of a one-process run. :class:`Checkpoint` writes through
Orbax (a directory all hosts reach); :meth:`TrainLoop.export` writes on
process 0.
"""

from __future__ import annotations

from ._callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    FitContext,
    LearningRateLogger,
    MetricsCallback,
    ProgressBar,
)
from ._data import ArrayDataset, DataError, ParquetDataset, prefetch
from ._export import export_model, make_signature
from ._history import History
from ._loader import ExportedModel, load_exported
from ._losses import (
    TASKS,
    LossFn,
    LossSpec,
    binary_accuracy,
    binary_cross_entropy,
    categorical_accuracy,
    loss_for_task,
    mean_absolute_error,
    mean_squared_error,
    softmax_cross_entropy,
    task_outputs,
)
from ._models import MLP, ModelDef, ModelLike, WideAndDeep, as_model, from_nnx
from ._parallel import make_mesh, replicate, shard_batch
from ._state import TrainState, init_train_state
from ._step import EvalStep, TrainStep, make_eval_step, make_train_step, with_gradient_clipping
from ._tasks import TrainResult, check_label, train_transformed, transform_features
from ._trainer import TrainLoop
from ._types import Batch, Features

__all__ = [
    "MLP",
    "TASKS",
    "ArrayDataset",
    "Batch",
    "Callback",
    "Checkpoint",
    "DataError",
    "EarlyStopping",
    "EvalStep",
    "ExportedModel",
    "Features",
    "FitContext",
    "History",
    "LearningRateLogger",
    "LossFn",
    "LossSpec",
    "MetricsCallback",
    "ModelDef",
    "ModelLike",
    "ParquetDataset",
    "ProgressBar",
    "TrainState",
    "TrainResult",
    "TrainStep",
    "TrainLoop",
    "WideAndDeep",
    "as_model",
    "binary_accuracy",
    "binary_cross_entropy",
    "categorical_accuracy",
    "check_label",
    "export_model",
    "from_nnx",
    "init_train_state",
    "load_exported",
    "loss_for_task",
    "make_eval_step",
    "make_mesh",
    "make_signature",
    "make_train_step",
    "mean_absolute_error",
    "mean_squared_error",
    "prefetch",
    "replicate",
    "shard_batch",
    "softmax_cross_entropy",
    "task_outputs",
    "train_transformed",
    "transform_features",
    "with_gradient_clipping",
]


_DEPRECATED = {"Trainer": "TrainLoop", "Model": "ModelDef"}
"""Old names kept for one release (they collided with ``jaxtx.components``' names)."""


def __getattr__(name: str) -> object:
    if name in _DEPRECATED:
        import warnings

        new = _DEPRECATED[name]
        warnings.warn(
            f"jaxtx.trainer.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2
        )
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
