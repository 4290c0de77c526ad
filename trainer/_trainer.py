"""The :class:`TrainLoop`: a Keras-like ``fit`` loop over the pure pieces."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._callbacks import Callback, FitContext, Resume
from ._data import DataError, HostGroup, Layout, _PackedDataset, stack_batches
from ._history import History
from ._losses import LossFn, resolve_loss
from ._models import ModelDef, as_model
from ._parallel import (
    DATA_AXIS,
    batch_sharded,
    local_device_count,
    make_mesh,
    replicate,
    replicated,
    shard_batch,
)
from ._process_data import ProcessShard
from ._resident import ResidentData, gather_batch, place, resident_columns
from ._state import TrainState, init_train_state
from ._step import (
    TrainStep,
    _means,
    make_eval_sums,
    make_sum_step,
    user_step_to_sum_step,
)
from ._types import Batch, PyTree

__all__ = ["TrainLoop"]

_AUTO_ROWS_PER_EXECUTION = 8192
"""``steps_per_execution=None`` runs enough steps per call to cover this many rows..."""
_AUTO_MAX_STEPS_PER_EXECUTION = 64
"""...but at most this many steps."""
_DEVICE_BUFFERS = 2
"""Host groups on their way to (or waiting on) the device: double buffering."""


class _Source:
    """Adapts a dataset or an iterable of batches to host batches for the loop."""

    def __init__(self, data: Any, what: str) -> None:
        self.data = data
        self.what = what
        self.layout: Layout | None = None
        self.batch_size: int | None = None
        self.length: int | None = None
        self.rows: int | None = None  # rows per batch on the device, padding included
        self.group_size = 1  # batches per compiled call
        self._peeked: tuple[dict[str, np.ndarray], np.ndarray] | None = None
        if isinstance(data, _PackedDataset):
            self.layout, self.batch_size, self.length = data.layout, data.batch_size, len(data)
        elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Mapping):
            raise TypeError(
                f"{what} is a (features, labels) pair of arrays; wrap it as "
                "ArrayDataset(features, labels, batch_size=...) so it is batched and shuffled"
            )
        elif not isinstance(data, Iterable):
            raise TypeError(
                f"{what} must be a ParquetDataset, an ArrayDataset or an iterable of "
                f"(features, labels) batches, not {type(data).__name__}"
            )
        else:
            self.batch_size = getattr(data, "batch_size", None)
            try:
                self.length = len(data)  # type: ignore[arg-type]
            except TypeError:
                self.length = None

    def epoch(self, epoch: int) -> Iterator[tuple[Any, np.ndarray]]:
        """Iterate ``(x, labels)``: ``x`` is ``(floats, ints)`` when packed, else a feature dict.

        A packed dataset starts producing (in its prefetch thread) right away.
        """
        if self.layout is not None:
            it = self.data.packed_epoch(epoch)
            return (((hb.floats, hb.ints), hb.labels) for hb in it)
        return self._generic_epoch(epoch)

    def groups(self, epoch: int, plan: Callable[[int], tuple[int, int]]) -> Iterator[HostGroup]:
        """The batches of ``epoch``, stacked :attr:`group_size` at a time and padded to :attr:`rows`.

        ``plan(batch_size) -> (rows, group_size)`` fixes both the first time
        (from the dataset's ``batch_size``, else from the first batch). A
        packed dataset stacks in its prefetch thread; other sources here.
        """
        if self.layout is not None:
            if self.rows is None:
                self.rows, self.group_size = plan(self.data.batch_size)
            return self.data.packed_groups(epoch, self.group_size, rows=self.rows)
        return self._generic_groups(epoch, plan)

    def _generic_groups(
        self, epoch: int, plan: Callable[[int], tuple[int, int]]
    ) -> Iterator[HostGroup]:
        pending: list[tuple[Any, np.ndarray]] = []
        for x, labels in self._generic_epoch(epoch):
            if self.rows is None:
                self.rows, self.group_size = plan(self.batch_size or labels.shape[0])
            if labels.shape[0] > self.rows:
                raise DataError(
                    f"a batch has {labels.shape[0]} rows but the first batch had {self.rows}; "
                    "yield batches of at most the first batch's size"
                )
            pending.append((x, labels))
            if len(pending) == self.group_size:
                yield stack_batches(pending, self.rows)
                pending = []
        if pending and self.rows is not None:
            yield stack_batches(pending, self.rows)

    def _generic_epoch(self, epoch: int) -> Iterator[tuple[Any, np.ndarray]]:
        if hasattr(self.data, "iter_epoch"):
            it = self.data.iter_epoch(epoch)
        else:
            it = iter(self.data)
            if it is self.data:  # a one-shot iterator: one epoch, starting with the peeked batch
                if epoch > 0:
                    raise TypeError(
                        f"{self.what} is an iterator and was used up after one epoch; pass a "
                        "re-iterable (a list, a dataset, or an object whose __iter__ starts over)"
                    )
                if self._peeked is not None:
                    first, self._peeked = self._peeked, None
                    yield first
        for item in it:
            yield _host_dict_batch(item, self.what)

    def example_features(self) -> dict[str, np.ndarray]:
        if isinstance(self.data, _PackedDataset):
            return self.data.example_features()
        if not hasattr(self.data, "iter_epoch") and iter(self.data) is self.data:
            for item in self.data:
                self._peeked = _host_dict_batch(item, self.what)
                return dict(self._peeked[0])
        else:
            for x, _ in self.epoch(0):
                return dict(x)
        raise DataError(f"{self.what} yielded no batches; check that it is not empty")


def _host_dict_batch(item: Any, what: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    if isinstance(item, Batch):
        item = (item.features, item.labels)
    if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], Mapping)):
        raise TypeError(
            f"{what} must yield (features: dict, labels) pairs, got {type(item).__name__}"
        )
    feats = {k: np.asarray(v) for k, v in item[0].items()}
    labels = np.asarray(item[1])
    n = labels.shape[0] if labels.ndim else -1
    for k, v in feats.items():
        if v.ndim == 0 or v.shape[0] != n:
            raise DataError(
                f"feature {k!r} has shape {v.shape} but labels have shape {labels.shape}; every "
                "feature needs one row per label"
            )
        if v.dtype == np.float64:
            feats[k] = v.astype(np.float32)
        elif v.dtype == np.int64:
            feats[k] = v.astype(np.int32)
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        raise DataError(f"{what} has NaN labels; drop or impute those rows before training")
    return feats, labels


def _process_local(data: Any) -> Any:
    """With several processes: this process's rows of each global batch of ``data``.

    An :class:`ArrayDataset` or :class:`ParquetDataset` describing the whole
    data set becomes a :class:`ProcessShard`; a ``ParquetDataset`` built with
    ``num_shards > 1`` already holds this process's files and is kept (its
    batches are this process's part of each global batch; every process must
    have as many); other iterables must yield this process's rows themselves.
    """
    count = jax.process_count()
    if count == 1 or not isinstance(data, _PackedDataset) or isinstance(data, ProcessShard):
        return data
    if getattr(data, "num_shards", 1) > 1:
        _check_same_length(data)
        return data
    return ProcessShard(data, jax.process_index(), count)


def _check_same_length(data: Any) -> None:
    """Every process's file shard yields as many batches (else the steps' collectives hang)."""
    from jax.experimental import multihost_utils

    lengths = np.asarray(multihost_utils.process_allgather(np.int32(len(data)))).reshape(-1)
    if len(set(lengths.tolist())) > 1:
        raise DataError(
            f"the processes' file shards give different numbers of batches per epoch "
            f"({lengths.tolist()}, by process); give every process as many rows "
            "(num_shards files of equal size), or pass the whole dataset (num_shards=1) and "
            "let each process take its rows of each batch"
        )


def _overrides(cb: Any, name: str) -> bool:
    """Whether ``cb`` has its own ``name`` hook (not the no-op of :class:`Callback`)."""
    method = getattr(cb, name, None)
    if method is None:
        return False
    return getattr(method, "__func__", method) is not getattr(Callback, name, None)


class _StackedMetrics:
    """The per-step metrics of one multi-step call, copied to the host on first use.

    Step ``i`` of the call is at index ``offset + i``.
    """

    __slots__ = ("_device", "_host", "offset")

    def __init__(self, device: dict[str, jax.Array], offset: int = 0) -> None:
        self._device = device
        self._host: dict[str, np.ndarray] | None = None
        self.offset = offset

    def keys(self) -> Iterable[str]:
        return self._device.keys()

    def host(self) -> dict[str, np.ndarray]:
        if self._host is None:
            self._host = {k: np.asarray(v) for k, v in jax.device_get(self._device).items()}
        return self._host


class _StepMetrics(Mapping[str, Any]):
    """One step's metrics out of a multi-step call (numpy scalars, read lazily)."""

    __slots__ = ("_stacked", "_index")

    def __init__(self, stacked: _StackedMetrics, index: int) -> None:
        self._stacked, self._index = stacked, index

    def __getitem__(self, key: str) -> Any:
        return self._stacked.host()[key][self._stacked.offset + self._index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stacked.keys())

    def __len__(self) -> int:
        return len(self._stacked.keys())  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return repr(dict(self))


class _DeviceGroup(NamedTuple):
    """A host group's batches on the devices: ``[g, rows, ...]``, or ``[rows, ...]`` if ``g == 1``."""

    x: Any
    labels: Any
    weights: Any
    sizes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def stacked(self) -> bool:
        return len(self.sizes) > 1


def _one_batch_shapes(group: _DeviceGroup) -> tuple[Any, Any]:
    """Shapes and dtypes of one batch of ``group``: ``(x, labels)``."""

    def one(a: Any) -> jax.ShapeDtypeStruct:
        shape = a.shape[1:] if group.stacked else a.shape
        return jax.ShapeDtypeStruct(shape, a.dtype)

    return jax.tree.map(one, group.x), one(group.labels)


def _ahead(items: Iterable[HostGroup], put: Callable[[HostGroup], _DeviceGroup]) -> Iterator[Any]:
    """``put`` each item, :data:`_DEVICE_BUFFERS` - 1 ahead of the one handed out.

    ``jax.device_put`` returns before the copy is done, so the next group is
    on its way to the devices while the current one is trained on.
    """
    pending: deque[_DeviceGroup] = deque()
    for item in items:
        pending.append(put(item))
        if len(pending) >= _DEVICE_BUFFERS:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


def _pad_rows(tree: Any, target: int) -> Any:
    def pad(x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n == target:
            return x
        return np.concatenate([x, np.zeros((target - n, *x.shape[1:]), x.dtype)])

    return jax.tree.map(pad, tree)


class TrainLoop:
    """Fit a model with an optax optimizer, data parallel over the local devices.

    Args:
      model: an :class:`MLP`, :class:`WideAndDeep`, :class:`ModelDef` (``init`` /
        ``apply`` pair), object with ``init``/``apply``, or Flax ``nnx.Module``.
      optimizer: any optax ``GradientTransformation`` (see
        :func:`with_gradient_clipping`).
      loss: ``"binary_crossentropy"``, ``"softmax_cross_entropy"``, ``"mse"`` or
        ``loss(outputs, labels) -> float32[b]``. Optional with ``train_step``,
        but needed for ``eval_data``.
      metrics: ``{name: fn(outputs, labels) -> float32[b]}``; default: accuracy
        for classification losses, mae for mse.
      compute_dtype: ``jnp.bfloat16`` for mixed precision (float32 params).
      train_step: a whole user step ``(state, batch) -> (state, metrics)``
        replacing the built-in one (``batch`` is a :class:`Batch` whose
        ``weights`` are 0 for padding rows).
      seed: seed for parameter initialisation and dropout.
      devices: devices to train on (default: all); the batch is split over them.
      mesh: a 1-D mesh with axis ``"data"`` instead of ``devices``.
      steps_per_execution: optimizer steps run by one compiled call (a
        ``jax.lax.scan`` over that many stacked batches, which the input
        pipeline prepares in its background thread), so that the per-call
        dispatch cost is paid once per group instead of once per step. ``None``
        (default) picks enough steps for a call to cover about 8192 rows (a
        power of two, at most 64 and at most one epoch): 8 steps at batch size
        1024, 1 for batches of 8192 rows or more. ``1`` runs one step per call.
        The value changes nothing but speed: the batches, their order, the
        per-step PRNG keys and updates are the same, and so are the
        parameters, bit for bit, on one device or several (checked on CPU;
        the scanned step gets each batch whole, so it compiles as a single
        step does; other backends may still round differently). A group is
        cut short at the end of an epoch, at the ``steps`` limit and wherever
        a callback needs the exact state (:meth:`Callback.needs_exact_state`,
        e.g. :class:`Checkpoint` at its step interval); the rest runs as
        smaller (power-of-two) scans. ``on_step_end`` is still called for
        every step, in order, after the call that ran it, with that step's
        metrics but with the state at the end of the call; a stop request
        takes effect after that call. Data-parallel meshes are supported
        (the stacked batches are split along their row axis). With
        device-resident data, ``None`` runs a whole epoch per call.
      device_resident: where the training rows live. ``"auto"`` (default):
        an in-memory dataset (:class:`ArrayDataset`, or a
        :class:`ParquetDataset` served from memory) whose rows take at most
        ``device_memory_fraction`` of each device's memory is copied to the
        devices once per :meth:`fit` (rows split over the mesh); each epoch
        then sends only its row order (the dataset's own shuffle, so the
        batches are the same), and runs in one compiled call, or in calls of
        ``steps_per_execution`` steps when that is set (and wherever a
        callback needs the exact state, or the ``steps`` limit ends it), with
        the same results, bit for bit, as the host path. ``True`` places any
        in-memory dataset whatever its size (an error for other data or
        several processes); ``False`` always uses the host pipeline, whose
        batches are copied to the devices while the previous call runs
        (double buffering).
      device_memory_fraction: the share of each device's memory (for CPU
        devices: their share of the RAM) that ``"auto"`` lets the rows take.

    Attributes:
      state: the :class:`TrainState` after :meth:`fit` (``None`` before).
      steps_per_execution: the setting above (read by each :meth:`fit`).
      device_resident: the setting above (read by each :meth:`fit`).
      resident: whether the last :meth:`fit` kept its training rows on the devices.

    Example:
      >>> trainer = TrainLoop(MLP(hidden=(64, 64)), optax.adam(1e-3), loss="binary_crossentropy")
      >>> history = trainer.fit(train_ds, eval_data=eval_ds, epochs=5,
      ...                       callbacks=[EarlyStopping("val_loss", patience=2)])
      >>> history.plot("curves.png")
    """

    def __init__(
        self,
        model: Any,
        optimizer: optax.GradientTransformation,
        loss: str | LossFn | None = None,
        *,
        metrics: Mapping[str, LossFn] | None = None,
        compute_dtype: Any = None,
        train_step: TrainStep | None = None,
        seed: int = 0,
        devices: Sequence[Any] | None = None,
        mesh: jax.sharding.Mesh | None = None,
        steps_per_execution: int | None = None,
        device_resident: bool | str = "auto",
        device_memory_fraction: float = 0.25,
    ) -> None:
        if device_resident not in ("auto", True, False):
            raise ValueError(
                f"device_resident must be 'auto', True or False, got {device_resident!r}"
            )
        if not 0.0 < device_memory_fraction <= 1.0:
            raise ValueError(
                f"device_memory_fraction must be in (0, 1], got {device_memory_fraction!r}"
            )
        self.device_resident = device_resident
        self.device_memory_fraction = float(device_memory_fraction)
        if steps_per_execution is not None and (
            not isinstance(steps_per_execution, int | np.integer) or steps_per_execution < 1
        ):
            raise ValueError(
                f"steps_per_execution must be a positive int or None, got {steps_per_execution!r}"
            )
        self.steps_per_execution = None if steps_per_execution is None else int(steps_per_execution)
        self.model: ModelDef = as_model(model)
        self.optimizer = optimizer
        if loss is None and train_step is None:
            raise ValueError(
                "TrainLoop needs a loss: pass loss='binary_crossentropy' | 'softmax_cross_entropy' | "
                "'mse' | a function, or a whole train_step"
            )
        self.loss = loss
        self.loss_spec = resolve_loss(loss) if loss is not None else None
        self.metrics = metrics
        self.compute_dtype = compute_dtype
        self.seed = seed
        self.mesh = mesh if mesh is not None else make_mesh(devices)
        if train_step is not None:
            self._sum_step = user_step_to_sum_step(train_step)
        else:
            assert loss is not None
            self._sum_step = make_sum_step(
                self.model, loss, optimizer, metrics=metrics, compute_dtype=compute_dtype
            )
        self._eval_sums = (
            make_eval_sums(self.model, loss, metrics=metrics, compute_dtype=compute_dtype)
            if loss is not None
            else None
        )
        self._local_devices = local_device_count(self.mesh)
        self._repl = replicated(self.mesh)
        self._rows_sharding = batch_sharded(self.mesh)
        self._stacked_sharding = jax.sharding.NamedSharding(
            self.mesh, jax.sharding.PartitionSpec(None, DATA_AXIS)
        )
        self._jitted: dict[tuple[str, Layout | None], Callable[..., Any]] = {}
        self._ones: dict[int, jax.Array] = {}
        self._stacked_ones: dict[tuple[int, int], jax.Array] = {}
        self._sum_shapes: dict[tuple[str, Layout | None], Any] = {}
        self._predict: Callable[..., Any] | None = None
        self.state: TrainState | None = None
        self.resident = False

    # ----------------------------------------------------------------- state

    def init_state(self, example_features: Mapping[str, Any]) -> TrainState:
        """Initialise params and optimizer state from ``seed``, replicated over the mesh.

        Args:
          example_features: one batch of features (shapes and dtypes matter).

        Returns:
          The state at step 0.
        """
        state = init_train_state(self.model, self.optimizer, example_features, seed=self.seed)
        return replicate(state, self.mesh)

    # ----------------------------------------------------------------- compiled steps

    def _unpack(self, layout: Layout | None) -> Callable[[Any], dict[str, Any]]:
        if layout is None:
            return lambda x: x
        return lambda x: layout.unpack(x[0], x[1])

    def _fit_step(self, layout: Layout | None) -> Callable[..., Any]:
        key = ("fit", layout)
        if key not in self._jitted:
            unpack, sum_step = self._unpack(layout), self._sum_step

            def fit_step(
                state: TrainState, acc: dict[str, jax.Array], x: Any, labels: Any, weights: Any
            ) -> tuple[TrainState, dict[str, jax.Array], dict[str, jax.Array]]:
                state, sums = sum_step(state, Batch(unpack(x), labels, weights))
                acc = {k: acc[k] + sums[k] for k in sums}
                return state, acc, _means(sums)

            rows = self._rows_sharding
            self._jitted[key] = jax.jit(
                fit_step,
                in_shardings=(self._repl, self._repl, rows, rows, rows),
                out_shardings=self._repl,
            )
        return self._jitted[key]

    def _fit_steps(self, layout: Layout | None) -> Callable[..., Any]:
        """``n`` train steps in one call: a scan of the one-step body over stacked batches.

        Each step's batch reaches the body whole, through the loop's carry (the
        next one is sliced at the end of the previous step), never as a slice
        inside the step: XLA would fuse the slice into the step's kernels,
        which then compile, and round, differently from :meth:`_fit_step`'s
        (on CPU it contracts ``a * b + c * d`` into an FMA and which product
        it keeps exact depends on the kernel: Adam's moments then differ by
        an ulp). Carried whole, the step compiles to the same kernels as a
        single step and the results are the same, bit for bit.
        """
        key = ("fit_steps", layout)
        if key not in self._jitted:
            unpack, sum_step = self._unpack(layout), self._sum_step

            def fit_steps(
                state: TrainState, acc: dict[str, jax.Array], xs: Any, labels: Any, weights: Any
            ) -> tuple[TrainState, dict[str, jax.Array], dict[str, jax.Array]]:
                stacked, n = (xs, labels, weights), labels.shape[0]

                def batch(i: jax.Array) -> Any:
                    return jax.tree.map(
                        lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, False), stacked
                    )

                def body(carry: Any, i: jax.Array) -> Any:
                    state, acc, (x, y, w) = carry  # batch i, whole (see above)
                    state, sums = sum_step(state, Batch(unpack(x), y, w))
                    acc = {k: acc[k] + sums[k] for k in sums}
                    return (state, acc, batch(jnp.minimum(i + 1, n - 1))), _means(sums)

                init = (state, acc, batch(jnp.int32(0)))
                (state, acc, _), metrics = jax.lax.scan(body, init, jnp.arange(n))
                return state, acc, metrics

            rows = self._stacked_sharding
            self._jitted[key] = jax.jit(
                fit_steps,
                in_shardings=(self._repl, self._repl, rows, rows, rows),
                out_shardings=self._repl,
            )
        return self._jitted[key]

    def _fit_resident(self, layout: Layout | None) -> Callable[..., Any]:
        """Steps ``lo .. hi`` of an epoch over device-resident rows, in one call.

        ``(state, acc, x, labels, num_rows, idx, lo, hi) -> (state, acc, metrics)``:
        step ``i`` gathers the rows ``idx[i]`` (:func:`gather_batch`) and runs
        the same body as :meth:`_fit_steps`; ``metrics`` holds each step's
        means at its index ``i`` (``[steps, ...]``, zeros outside ``lo .. hi``).
        The bounds are traced, so every chunk size shares one compilation.

        Unlike :meth:`_fit_steps`, the batch is gathered inside the step and
        some of its exact conversions (the 0/1 weights, the labels' bit
        casts) are fused into the step's kernels. The results still equal
        the host step's, bit for bit, in the tests (1 and 2 devices, short
        and padded batches); gathering at the end of the previous step and
        carrying the batch, as :meth:`_fit_steps` does, would give the host
        step's kernels exactly but cost about 8% per step (CPU, batch 1024).
        """
        key = ("fit_resident", layout)
        if key not in self._jitted:
            unpack, sum_step, mesh = self._unpack(layout), self._sum_step, self.mesh

            def fit_resident(
                state: TrainState,
                acc: dict[str, jax.Array],
                x: Any,
                labels: jax.Array,
                num_rows: jax.Array,
                idx: jax.Array,
                lo: jax.Array,
                hi: jax.Array,
            ) -> tuple[TrainState, dict[str, jax.Array], dict[str, jax.Array]]:
                steps = idx.shape[0]
                metrics = {
                    k: jnp.zeros((steps, *v.shape), v.dtype) for k, v in acc.items() if k != "count"
                }

                def body(i: jax.Array, carry: Any) -> Any:
                    state, acc, metrics = carry
                    bx, by, bw = gather_batch(x, labels, num_rows, idx[i], mesh)
                    state, sums = sum_step(state, Batch(unpack(bx), by, bw))
                    acc = {k: acc[k] + sums[k] for k in sums}
                    means = _means(sums)
                    metrics = {k: metrics[k].at[i].set(means[k]) for k in metrics}
                    return state, acc, metrics

                return jax.lax.fori_loop(lo, hi, body, (state, acc, metrics))

            self._jitted[key] = jax.jit(fit_resident, out_shardings=self._repl)
        return self._jitted[key]

    def _eval_step(self, layout: Layout | None) -> Callable[..., Any]:
        key = ("eval", layout)
        if key not in self._jitted:
            unpack, sums_fn = self._unpack(layout), self._eval_sums
            assert sums_fn is not None

            def eval_step(
                params: PyTree, acc: dict[str, jax.Array], x: Any, labels: Any, weights: Any
            ) -> dict[str, jax.Array]:
                sums = sums_fn(params, Batch(unpack(x), labels, weights))
                return {k: acc[k] + sums[k] for k in sums}

            self._jitted[key] = jax.jit(eval_step, out_shardings=self._repl)
        return self._jitted[key]

    def _target(self, batch_size: int) -> int:
        d = self._local_devices
        return -(-batch_size // d) * d

    def _to_device(self, x: Any, labels: np.ndarray, target: int) -> tuple[Any, Any, jax.Array]:
        n = labels.shape[0]
        if n > target:
            raise DataError(
                f"a batch has {n} rows but the first batch had {target}; yield batches of at "
                "most the first batch's size"
            )
        if n == target:
            if target not in self._ones:
                self._ones[target] = shard_batch(np.ones(target, np.float32), self.mesh)
            dx, dl = shard_batch((x, labels), self.mesh)
            return dx, dl, self._ones[target]
        w = np.zeros(target, np.float32)
        w[:n] = 1.0
        return shard_batch((_pad_rows(x, target), _pad_rows(labels, target), w), self.mesh)

    def _resolve_steps_per_execution(self, rows: int, steps_per_epoch: int | None) -> int:
        """Steps per compiled call for batches of ``rows`` rows (see ``steps_per_execution``)."""
        if self.steps_per_execution is not None:
            return self.steps_per_execution
        want = -(-_AUTO_ROWS_PER_EXECUTION // max(rows, 1))
        k = min(1 << (want - 1).bit_length(), _AUTO_MAX_STEPS_PER_EXECUTION)
        if steps_per_epoch:
            k = min(k, steps_per_epoch)
        return max(k, 1)

    def _put_group(self, group: HostGroup) -> _DeviceGroup:
        """Start copying a host group to the devices (``jax.device_put`` returns at once).

        A group of one batch is placed unstacked (``[rows, ...]``); full
        batches share a cached weight array.
        """
        rows, g = int(group.labels.shape[1]), len(group)
        full = all(size == rows for size in group.sizes)
        if g == 1:
            x, labels, put = jax.tree.map(lambda a: a[0], group.x), group.labels[0], self._put_rows
            if full and rows not in self._ones:
                self._ones[rows] = shard_batch(np.ones(rows, np.float32), self.mesh)
            ones = self._ones.get(rows)
            w = (np.arange(rows) < group.sizes[0]).astype(np.float32)
        else:
            x, labels, put = group.x, group.labels, self._put_stacked
            if full and (g, rows) not in self._stacked_ones:
                self._stacked_ones[g, rows] = self._put_stacked(np.ones((g, rows), np.float32))
            ones = self._stacked_ones.get((g, rows))
            w = (np.arange(rows)[None, :] < np.asarray(group.sizes)[:, None]).astype(np.float32)
        if full:
            dx, dl = put((x, labels))
            return _DeviceGroup(dx, dl, ones, group.sizes)
        dx, dl, dw = put((x, labels, w))
        return _DeviceGroup(dx, dl, dw, group.sizes)

    @staticmethod
    def _slice_group(group: _DeviceGroup, lo: int, n: int) -> tuple[Any, Any, Any, bool]:
        """Batches ``lo .. lo + n`` of a placed group: ``(x, labels, weights, stacked)``."""
        if lo == 0 and n == len(group):
            return group.x, group.labels, group.weights, group.stacked
        if n == 1:
            x, labels, w = jax.tree.map(lambda a: a[lo], (group.x, group.labels, group.weights))
            return x, labels, w, False
        x, labels, w = jax.tree.map(
            lambda a: a[lo : lo + n], (group.x, group.labels, group.weights)
        )
        return x, labels, w, True

    def _put_rows(self, tree: Any) -> Any:
        """One batch on the devices, its rows split over the mesh.

        In a single process the arrays are the whole batch; with several
        processes the local rows are assembled into global arrays.
        """
        return shard_batch(tree, self.mesh)

    def _put_stacked(self, tree: Any) -> Any:
        """Like :meth:`_put_rows` for ``[n, rows, ...]`` arrays (rows split over the mesh)."""
        sharding = self._stacked_sharding
        if jax.process_count() == 1:
            return jax.device_put(tree, sharding)
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), tree)

    def _first_sums(
        self,
        layout: Layout | None,
        x: Any,
        labels: Any,
        state: TrainState,
        restored: Mapping[str, float] | None,
    ) -> dict[str, jax.Array]:
        """The epoch's running sums at its first step: zeros, or those of a resumed epoch.

        ``x`` and ``labels`` are one batch, or anything with its shapes and dtypes.
        """
        rows = int(labels.shape[0])
        weights = jax.ShapeDtypeStruct((rows,), jnp.float32)
        acc = self._zero_sums("fit", layout, state, x, labels, weights)
        if restored:
            acc = replicate(
                {k: jnp.asarray(restored.get(k, 0.0), v.dtype) for k, v in acc.items()},
                self.mesh,
            )
        return acc

    def _zero_sums(self, kind: str, layout: Layout | None, *args: Any) -> dict[str, jax.Array]:
        """Replicated zeros shaped like the step's sums (traced once per kind and layout)."""
        key = (kind, layout)
        if key not in self._sum_shapes:
            unpack, sum_step, eval_sums = self._unpack(layout), self._sum_step, self._eval_sums

            def fn(s: Any, x: Any, y: Any, w: Any) -> dict[str, jax.Array]:
                batch = Batch(unpack(x), y, w)
                if kind == "fit":
                    return sum_step(s, batch)[1]
                assert eval_sums is not None
                return eval_sums(s, batch)

            self._sum_shapes[key] = jax.eval_shape(fn, *args)
        shapes = self._sum_shapes[key]
        return replicate({k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}, self.mesh)

    # ----------------------------------------------------------------- evaluate

    def evaluate(self, data: Any, state: TrainState | None = None) -> dict[str, float]:
        """Weighted-mean loss and metrics over one pass of ``data`` (no dropout).

        Args:
          data: a dataset or iterable of ``(features, labels)``.
          state: state to evaluate (default: :attr:`state`).

        Returns:
          ``{"loss": ..., "accuracy": ...}``.
        """
        if self._eval_sums is None:
            raise ValueError("evaluation needs a loss: pass loss=... to TrainLoop")
        state = state if state is not None else self.state
        if state is None:
            raise ValueError("no state to evaluate: call fit() first or pass state=")
        src = data if isinstance(data, _Source) else _Source(_process_local(data), "eval_data")
        step = self._eval_step(src.layout)
        acc: Any = None
        target = None
        for x, labels in src.epoch(0):
            if target is None:
                target = self._target(src.batch_size or labels.shape[0])
            dx, dl, dw = self._to_device(x, labels, target)
            if acc is None:
                acc = self._zero_sums("eval", src.layout, state.params, dx, dl, dw)
            acc = step(state.params, acc, dx, dl, dw)
        if acc is None:
            raise DataError("eval_data yielded no batches; check that it is not empty")
        return {k: float(v) for k, v in _means(acc).items()}

    # ----------------------------------------------------------------- fit

    def fit(
        self,
        train_data: Any,
        eval_data: Any = None,
        *,
        epochs: int | None = None,
        steps: int | None = None,
        callbacks: Sequence[Callback] = (),
        state: TrainState | None = None,
    ) -> History:
        """Train, evaluating on ``eval_data`` after every epoch.

        Args:
          train_data: a :class:`ParquetDataset`, :class:`ArrayDataset` or a
            re-iterable of ``(features, labels)`` numpy batches. The last,
            smaller batch of an epoch is padded to the full size with weight-0
            rows, so the step compiles once. With several processes
            (:mod:`jaxtx.trainer.distributed`) pass every process the whole
            dataset: each feeds its rows of every global batch (a
            ``ParquetDataset`` with ``num_shards > 1``, or an iterable of
            batches, is taken as this process's part as it is).
          eval_data: the same kinds, evaluated after each epoch (``val_`` metrics).
          epochs: number of epochs.
          steps: number of optimizer steps (across epochs); with ``epochs``
            training stops at whichever comes first.
          callbacks: :class:`Callback` objects.
          state: start from this state instead of a fresh one.

        Returns:
          The :class:`History`; the final state is in :attr:`state`.

        Raises:
          DataError: the data is empty or malformed.
        """
        if epochs is None and steps is None:
            raise ValueError("pass epochs=N or steps=N to fit()")
        src = _Source(_process_local(train_data), "train_data")
        eval_src = (
            _Source(_process_local(eval_data), "eval_data") if eval_data is not None else None
        )
        if eval_src is not None and self._eval_sums is None:
            raise ValueError("eval_data needs a loss: pass loss=... to TrainLoop")
        cbs = sorted(callbacks, key=lambda c: getattr(c, "order", 0))

        if state is None:
            state = self.init_state(src.example_features())
        else:
            state = replicate(state, self.mesh)
        run = _FitRun(self, src, eval_src, cbs, state, epochs=epochs, steps=steps)
        for cb in cbs:
            cb.on_train_begin(run.state, run.ctx)
        try:
            while not run.done():
                run.run_epoch()
        finally:
            self.state = run.state
        for cb in cbs:
            cb.on_train_end(run.state, run.history)
        return run.history

    # ----------------------------------------------------------------- inference and export

    @property
    def predict_fn(self) -> Callable[[PyTree, Mapping[str, Any]], dict[str, jax.Array]]:
        """``predict(params, features) -> {name: output}`` for serving.

        Binary classification gives ``logits`` and ``probabilities`` (``[b]``),
        softmax gives ``logits`` and ``probabilities`` (``[b, k]``), ``mse``
        gives ``predictions``, a custom loss ``outputs``.
        """
        apply = self.model.apply
        task = self.loss_spec.task if self.loss_spec is not None else "custom"

        def predict(params: PyTree, features: Mapping[str, Any]) -> dict[str, jax.Array]:
            out = apply(params, dict(features), train=False, key=None)
            if task == "binary_classification":
                logits = out[..., 0] if out.ndim == 2 and out.shape[-1] == 1 else out
                return {"probabilities": jax.nn.sigmoid(logits), "logits": logits}
            if task == "multiclass_classification":
                return {"probabilities": jax.nn.softmax(out, axis=-1), "logits": out}
            if task == "regression":
                return {"predictions": out[..., 0] if out.ndim == 2 and out.shape[-1] == 1 else out}
            return out if isinstance(out, dict) else {"outputs": out}

        return predict

    def predict(
        self, features: Mapping[str, Any], state: TrainState | None = None
    ) -> dict[str, np.ndarray]:
        """Run :attr:`predict_fn` on a batch of numpy features.

        Args:
          features: ``{name: array[b]}``.
          state: default :attr:`state`.

        Returns:
          ``{name: numpy array}``.
        """
        state = state if state is not None else self.state
        if state is None:
            raise ValueError("no state: call fit() first or pass state=")
        if self._predict is None:
            self._predict = jax.jit(self.predict_fn)
        out = self._predict(state.params, {k: np.asarray(v) for k, v in features.items()})
        return {k: np.asarray(v) for k, v in out.items()}

    def export(
        self,
        out_dir: str,
        signature: Mapping[str, Any],
        *,
        preprocess: Mapping[str, Any] | None = None,
        history: History | None = None,
        state: TrainState | None = None,
    ) -> str:
        """Export :attr:`predict_fn` with the trained params; see :func:`export_model`.

        With several processes, process 0 writes and the others wait for it.

        Returns:
          ``out_dir``.
        """
        from ._export import export_model

        state = state if state is not None else self.state
        if state is None:
            raise ValueError("nothing to export: call fit() first or pass state=")
        if jax.process_count() == 1:
            return export_model(
                self.predict_fn,
                state.params,
                signature,
                out_dir,
                preprocess=preprocess,
                history=history,
            )
        from .distributed import barrier, host_copy, is_primary

        if is_primary():
            export_model(
                self.predict_fn,
                host_copy(state.params),
                signature,
                out_dir,
                preprocess=preprocess,
                history=history,
            )
        barrier(f"jaxtx-export:{out_dir}")
        return out_dir


class _FitRun:
    """One :meth:`TrainLoop.fit` call: its loop state and its steps (epoch, group, call).

    Args:
      trainer: The trainer (its compiled steps and device placement).
      src: The training data.
      eval_src: The evaluation data, or ``None``.
      cbs: The callbacks, in call order.
      state: The starting state (a callback's ``restore`` may replace it).
      epochs: Epoch limit, or ``None``.
      steps: Step limit, or ``None``.
    """

    def __init__(
        self,
        trainer: TrainLoop,
        src: _Source,
        eval_src: _Source | None,
        cbs: Sequence[Callback],
        state: TrainState,
        *,
        epochs: int | None,
        steps: int | None,
    ) -> None:
        self.trainer, self.src, self.eval_src, self.cbs = trainer, src, eval_src, cbs
        self.epochs, self.steps = epochs, steps
        self.state, self.history = state, History()
        self.epoch, self.skip = 0, 0
        self.restored_sums: Mapping[str, float] | None = None
        self._resume()
        self.step = int(self.state.step)
        self.history.initial_step = self.step
        self.ctx = FitContext(
            epochs, steps, src.length, src.batch_size, self.history, step=self.step
        )
        self.ctx.initial_step = self.step
        self.acc_box: dict[str, Any] = {}
        self.ctx.running_sums = lambda: {
            k: float(v) for k, v in self.acc_box.get("acc", {}).items()
        }
        self.fit_step = trainer._fit_step(src.layout)
        self.fit_steps = trainer._fit_steps(src.layout)
        self.resident = self._place()
        trainer.resident = self.resident is not None
        self.step_cbs = [cb for cb in cbs if _overrides(cb, "on_step_end")]
        self.exact_cbs = [cb for cb in cbs if _overrides(cb, "needs_exact_state")]
        self.stop = False
        self.next_it: Iterator[HostGroup] | None = None

    def _resume(self) -> None:
        """Take the state, history and position of the first callback that restores one."""
        for cb in self.cbs:
            restore = getattr(cb, "restore", None)
            resume: Resume | None = restore(self.state) if callable(restore) else None
            if resume is None:
                continue
            self.state = replicate(resume.state, self.trainer.mesh)
            self.history = resume.history
            if resume.epoch_done:
                self.epoch = resume.epoch + 1
            else:
                self.epoch = resume.epoch
                self.skip = int(resume.state.step) - resume.epoch_start_step
                self.restored_sums = resume.sums
            return

    def _place(self) -> ResidentData | None:
        """Copy the training rows to the devices when ``device_resident`` says so."""
        t = self.trainer
        cols = resident_columns(self.src.data, t.device_resident, t.mesh, t.device_memory_fraction)
        if cols is None:
            return None
        return place(cols, self.src.data, t.mesh, t._target(self.src.data.batch_size))

    def plan(self, batch_rows: int) -> tuple[int, int]:
        """Rows per device batch and steps per call for batches of ``batch_rows`` rows."""
        rows = self.trainer._target(batch_rows)
        return rows, self.trainer._resolve_steps_per_execution(rows, self.src.length)

    def done(self) -> bool:
        """Whether training ends here (stop requested, or the epoch or step limit reached)."""
        return (
            self.stop
            or (self.epochs is not None and self.epoch >= self.epochs)
            or (self.steps is not None and self.step >= self.steps)
        )

    def run_epoch(self) -> None:
        """Train one epoch, evaluate, record it in the history and call ``on_epoch_end``."""
        t0 = time.perf_counter()
        self.ctx.epoch, self.ctx.epoch_start_step = self.epoch, self.step - self.skip
        acc, seen, exhausted = self._train_epoch()
        if seen == 0:
            raise DataError(
                f"train_data yielded no batches in epoch {self.epoch}; check that it is not "
                "empty (and re-iterable)"
            )
        more = (self.epochs is None or self.epoch + 1 < self.epochs) and (
            self.steps is None or self.step < self.steps
        )
        if exhausted and more and self.src.layout is not None and self.resident is None:
            # let the next epoch's reader fill up during evaluation
            self.next_it = self.src.groups(self.epoch + 1, self.plan)
        record = self._epoch_record(acc, t0)
        self.history.append(record)
        self.acc_box.clear()
        for cb in self.cbs:
            if cb.on_epoch_end(self.epoch, self.state, record):
                self.stop = True
        self.epoch, self.skip, self.restored_sums = self.epoch + 1, 0, None

    def _train_epoch(self) -> tuple[Any, int, bool]:
        """The optimizer steps of one epoch: ``(running sums, batches seen, data exhausted)``."""
        if self.resident is not None:
            return self._train_epoch_resident(self.resident)
        acc: Any = None
        seen = 0
        it = self.next_it if self.next_it is not None else self.src.groups(self.epoch, self.plan)
        self.next_it = None
        exhausted = False
        try:
            for group in _ahead(it, self.trainer._put_group):
                lo, seen = max(self.skip - seen, 0), seen + len(group)
                acc = self._train_group(group, lo, acc)
                if self.stop:
                    break
            else:
                exhausted = True
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        return acc, seen, exhausted

    def _train_epoch_resident(self, data: ResidentData) -> tuple[Any, int, bool]:
        """One epoch over device-resident rows: calls of a whole epoch or of K steps."""
        t = self.trainer
        fit = t._fit_resident(self.src.layout)
        idx = replicate(data.indices(self.epoch), t.mesh)
        chunk = t.steps_per_execution or data.steps
        lo, acc = self.skip, None
        while lo < data.steps and not self.stop:
            n = self._call_size(min(data.steps - lo, chunk), pow2=False)
            if acc is None:
                x, labels = jax.tree.map(
                    lambda a: jax.ShapeDtypeStruct((data.rows, *a.shape[1:]), a.dtype),
                    (data.x, data.labels),
                )
                acc = t._first_sums(self.src.layout, x, labels, self.state, self.restored_sums)
            args = data.x, data.labels, np.int32(data.num_rows), idx, np.int32(lo), np.int32(lo + n)
            self.state, acc, metrics = fit(self.state, acc, *args)
            self.acc_box["acc"] = acc
            self._after_call(n, _StackedMetrics(metrics, offset=lo), True)
            lo += n
            if self.steps is not None and self.step >= self.steps:
                self.stop = True
        return acc, data.steps, lo >= data.steps

    def _train_group(self, group: _DeviceGroup, lo: int, acc: Any) -> Any:
        """Run batches ``lo..`` of a placed group, in as few compiled calls as allowed."""
        size = len(group)
        while lo < size and not self.stop:
            n = self._call_size(size - lo)
            dx, dl, dw, stacked = self.trainer._slice_group(group, lo, n)
            if acc is None:
                x, labels = _one_batch_shapes(group)
                acc = self.trainer._first_sums(
                    self.src.layout, x, labels, self.state, self.restored_sums
                )
            if stacked:
                self.state, acc, metrics = self.fit_steps(self.state, acc, dx, dl, dw)
                per_step: Any = _StackedMetrics(metrics)
            else:
                self.state, acc, per_step = self.fit_step(self.state, acc, dx, dl, dw)
            self.acc_box["acc"] = acc
            self._after_call(n, per_step, stacked)
            lo += n
            if self.steps is not None and self.step >= self.steps:
                self.stop = True
        return acc

    def _call_size(self, n: int, *, pow2: bool = True) -> int:
        """Steps for the next call out of ``n`` pending ones.

        With ``pow2`` a call shorter than a group is cut to a power of two
        (each scan length compiles once).
        """
        if self.steps is not None:
            n = min(n, self.steps - self.step)
        for j in range(1, n):  # end the call where a callback needs the state
            if any(cb.needs_exact_state(self.step + j) for cb in self.exact_cbs):
                n = j
                break
        if pow2 and n != self.src.group_size:  # a partial group: power-of-two scans
            n = 1 << (n.bit_length() - 1)
        return n

    def _after_call(self, n: int, metrics: Any, stacked: bool) -> None:
        """Count the ``n`` steps of a call and give each its ``on_step_end``."""
        for i in range(n):
            self.step += 1
            self.ctx.step = self.step
            if self.step_cbs:
                m = _StepMetrics(metrics, i) if stacked else metrics
                for cb in self.step_cbs:
                    if cb.on_step_end(self.step, self.state, m):
                        self.stop = True

    def _epoch_record(self, acc: Any, t0: float) -> dict[str, Any]:
        """The history record of the epoch: train means, ``val_`` metrics and timings."""
        if acc is None:  # resumed exactly at the end of this epoch's data
            acc = {k: jnp.asarray(v) for k, v in (self.restored_sums or {}).items()}
        train_logs = {k: float(v) for k, v in _means(acc).items()} if acc else {}
        train_time = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": self.epoch, "step": self.step}
        record.update(sorted(train_logs.items(), key=lambda kv: (kv[0] != "loss", kv[0])))
        if self.eval_src is not None:
            val = self.trainer.evaluate(self.eval_src, self.state)
            record.update({f"val_{k}": v for k, v in val.items()})
        record["train_time"] = train_time
        record["time"] = time.perf_counter() - t0
        return record
