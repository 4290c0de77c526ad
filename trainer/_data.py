"""Input pipelines: Parquet shards or in-memory arrays to shuffled numpy batches.

Both datasets yield ``(features, labels)`` with ``features = {name: array[b]}``
(``float32`` for numeric columns, ``int32`` for integer ids) and prepare the
next batches in a background thread (a bounded queue of ``prefetch`` batches),
so the accelerator does not wait for input.

Internally each batch is kept *packed*: one ``float32[b, n_float]`` matrix, one
``int32[b, n_int]`` matrix and the labels. :class:`~jaxtx.trainer.TrainLoop`
sends the packed arrays to the device as they are (two or three transfers a
step, however many features there are) and unpacks them inside the compiled
step. To run several steps per compiled call it asks for *groups*
(:meth:`_PackedDataset.packed_groups`): ``k`` consecutive batches stacked
into one ``[k, b, ...]`` array per block, prepared in the same background
thread (a reshape of the contiguous rows, no copy, except where the last
batch is padded).

Every epoch has its own deterministic order: ``numpy.random.default_rng(
[shuffle_seed, epoch])`` shuffles the file order, the row-group order inside
each file and the rows through a shuffle buffer, so a dataset larger than
memory streams through in bounded memory, and a restarted run sees the same
batches.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

from jaxtx.core.files import PathNotFoundError, expand_paths

__all__ = ["ArrayDataset", "DataError", "ParquetDataset", "prefetch"]

T = TypeVar("T")


class DataError(ValueError):
    """The input data cannot be used as it is (missing feature, bad dtype, NaN label, ...)."""


# --------------------------------------------------------------------------- packing


class _Slot(NamedTuple):
    name: str
    block: int  # 0: float block, 1: int block
    start: int
    stop: int
    shape: tuple[int, ...]  # trailing shape; () for [b] features


class Layout(NamedTuple):
    """Where each feature lives in the packed float/int matrices."""

    slots: tuple[_Slot, ...]
    n_float: int
    n_int: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slots)

    def unpack(self, floats: Any, ints: Any) -> dict[str, Any]:
        """Split packed matrices (numpy or jax) back into ``{name: array}``."""
        out = {}
        for s in self.slots:
            block = floats if s.block == 0 else ints
            if s.shape == ():
                out[s.name] = block[:, s.start]
            else:
                out[s.name] = block[:, s.start : s.stop].reshape((-1, *s.shape))
        return out

    def dtypes(self) -> dict[str, np.dtype]:
        return {s.name: np.dtype(np.float32 if s.block == 0 else np.int32) for s in self.slots}


def _make_layout(specs: Sequence[tuple[str, str, tuple[int, ...]]]) -> Layout:
    """``specs``: ``(name, "float32" | "int32", trailing_shape)``."""
    slots = []
    pos = [0, 0]
    for name, kind, shape in specs:
        block = 0 if kind == "float32" else 1
        width = math.prod(shape)
        slots.append(_Slot(name, block, pos[block], pos[block] + width, tuple(shape)))
        pos[block] += width
    return Layout(tuple(slots), pos[0], pos[1])


class HostBatch(NamedTuple):
    """A packed batch on the host: ``floats[b, n_float]``, ``ints[b, n_int]``, ``labels[b]``."""

    floats: np.ndarray | None
    ints: np.ndarray | None
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class HostGroup(NamedTuple):
    """``g`` consecutive batches stacked on a new leading axis, padded to ``rows`` rows each.

    Attributes:
      x: the features, a pytree of arrays ``[g, rows, ...]`` (``(floats, ints)``
        for packed datasets, where an absent block is ``None``).
      labels: ``[g, rows, ...]``.
      sizes: the real rows of each batch; rows past that are zero padding.
    """

    x: Any
    labels: np.ndarray
    sizes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.sizes)


def stack_batches(batches: Sequence[tuple[Any, np.ndarray]], rows: int) -> HostGroup:
    """Stack ``(x, labels)`` batches of at most ``rows`` rows into one :class:`HostGroup`.

    A single full batch is stacked without copying (a new leading axis of 1).
    """
    sizes = tuple(int(labels.shape[0]) for _, labels in batches)
    if len(batches) == 1 and sizes[0] == rows:
        x, labels = batches[0]
        return HostGroup(_tree_map(lambda a: a[None], x), labels[None], sizes)

    def stack(*parts: np.ndarray) -> np.ndarray:
        if all(p.shape[0] == rows for p in parts):
            return np.stack(parts)
        out = np.zeros((len(parts), rows, *parts[0].shape[1:]), parts[0].dtype)
        for i, p in enumerate(parts):
            out[i, : p.shape[0]] = p
        return out

    xs = [x for x, _ in batches]
    x = _tree_map(stack, *xs)
    return HostGroup(x, stack(*(labels for _, labels in batches)), sizes)


def _tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """``fn`` over the arrays of nested dicts / tuples / lists (``None`` stays ``None``)."""
    if tree is None:
        return None
    if isinstance(tree, Mapping):
        return {k: _tree_map(fn, tree[k], *(r[k] for r in rest)) for k in tree}
    if isinstance(tree, tuple | list):
        return type(tree)(_tree_map(fn, *parts) for parts in zip(tree, *rest, strict=True))
    return fn(tree, *rest)


def _group_block(blk: Sequence[np.ndarray], batch_size: int, rows: int) -> list[np.ndarray]:
    """Cut ``n <= g * batch_size`` rows into ``[g, rows, ...]`` (zero-padded where short)."""
    n = _blk_len(blk)
    g = -(-n // batch_size)
    if rows == batch_size and n == g * batch_size:
        return [x.reshape(g, batch_size, *x.shape[1:]) for x in blk]
    full = n // batch_size
    out = []
    for x in blk:
        a = np.zeros((g, rows, *x.shape[1:]), x.dtype)
        a[:full, :batch_size] = x[: full * batch_size].reshape(full, batch_size, *x.shape[1:])
        if full < g:
            a[full, : n - full * batch_size] = x[full * batch_size :]
        out.append(a)
    return out


def _blk_len(blk: Sequence[np.ndarray]) -> int:
    return int(blk[0].shape[0])


def _blk_concat(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.concatenate([x, y]) for x, y in zip(a, b, strict=True)]


def _blk_slice(blk: Sequence[np.ndarray], start: int, stop: int) -> list[np.ndarray]:
    return [x[start:stop] for x in blk]


def _rebatch(
    blocks: Iterable[list[np.ndarray]], batch_size: int, drop_remainder: bool
) -> Iterator[list[np.ndarray]]:
    """Cut a stream of row blocks into batches of exactly ``batch_size`` rows."""
    pending: list[np.ndarray] | None = None
    for blk in blocks:
        n = _blk_len(blk)
        start = 0
        if pending is not None:
            need = batch_size - _blk_len(pending)
            if n < need:
                pending = _blk_concat(pending, blk)
                continue
            yield _blk_concat(pending, _blk_slice(blk, 0, need))
            start, pending = need, None
        while n - start >= batch_size:
            yield _blk_slice(blk, start, start + batch_size)
            start += batch_size
        if start < n:
            pending = _blk_slice(blk, start, n)
    if pending is not None and not drop_remainder:
        yield pending


class _ShuffleBuffer:
    """A shuffle buffer of ``capacity`` rows, vectorised.

    While filling, rows are copied in. Once full, each incoming block of ``k``
    rows replaces ``k`` rows drawn uniformly at random from the buffer, and the
    drawn rows (in random order) are emitted. At the end, the rest is emitted
    in a random permutation.
    """

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self.rng = rng
        self.buf: list[np.ndarray] | None = None
        self.size = 0

    def push(self, blk: list[np.ndarray]) -> Iterator[list[np.ndarray]]:
        if self.buf is None:
            self.buf = [np.empty((self.capacity, *x.shape[1:]), x.dtype) for x in blk]
        n = _blk_len(blk)
        start = 0
        if self.size < self.capacity:
            take = min(self.capacity - self.size, n)
            for b, x in zip(self.buf, blk, strict=True):
                b[self.size : self.size + take] = x[:take]
            self.size += take
            start = take
        while start < n:
            k = min(n - start, self.capacity)
            idx = self.rng.choice(self.capacity, size=k, replace=False)
            out = [np.take(b, idx, axis=0) for b in self.buf]
            for b, x in zip(self.buf, blk, strict=True):
                b[idx] = x[start : start + k]
            start += k
            yield out

    def drain(self) -> Iterator[list[np.ndarray]]:
        if self.buf is not None and self.size:
            perm = self.rng.permutation(self.size)
            yield [np.take(b[: self.size], perm, axis=0) for b in self.buf]
        self.buf, self.size = None, 0


def epoch_order(seed: int | None, epoch: int, num_rows: int) -> np.ndarray | None:
    """The row order of an in-memory dataset in ``epoch``: its batches are consecutive slices.

    Both the host pipeline (:func:`_memory_blocks`) and the trainer's
    device-resident path read the rows in this order, so they see the same
    batches.

    Args:
      seed: the dataset's ``shuffle_seed``; ``None`` keeps the stored order.
      epoch: epoch number.
      num_rows: rows in the dataset.

    Returns:
      ``numpy.random.default_rng([seed, epoch]).permutation(num_rows)``, or
      ``None`` (the stored order) when ``seed`` is ``None``.
    """
    if seed is None:
        return None
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def _memory_blocks(
    cols: list[np.ndarray], batch_size: int, seed: int | None, epoch: int
) -> Iterator[list[np.ndarray]]:
    """Row blocks of in-memory columns, in :func:`epoch_order`."""
    n = _blk_len(cols)
    perm = epoch_order(seed, epoch, n)
    if perm is None:
        yield cols
        return
    step = max(batch_size, (65_536 // batch_size) * batch_size)
    for start in range(0, n, step):
        idx = perm[start : start + step]
        yield [np.take(c, idx, axis=0) for c in cols]  # same rows as c[idx], faster


# --------------------------------------------------------------------------- prefetch


class _End:
    pass


class _Raised(NamedTuple):
    exc: BaseException


def _produce(
    make_iterator: Callable[[], Iterator[Any]], q: queue.Queue[Any], stop: threading.Event
) -> None:
    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in make_iterator():
            if not put(item):
                return
        put(_End)
    except BaseException as e:  # re-raised in the consumer
        put(_Raised(e))


class _Prefetcher(Iterator[T]):
    """Iterator fed by a background thread through a bounded queue.

    The thread holds only the queue and the stop event, not the iterator, so
    dropping the iterator (``__del__``) stops the thread too.
    """

    def __init__(self, make_iterator: Callable[[], Iterator[T]], size: int) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(
            target=_produce,
            args=(make_iterator, self._q, self._stop),
            name="jaxtx-prefetch",
            daemon=True,
        )
        self._thread.start()

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._q.get()
        if item is _End:
            self.close()
            raise StopIteration
        if isinstance(item, _Raised):
            self.close()
            raise item.exc
        return item

    def close(self) -> None:
        """Stop the producer thread (pending items are dropped)."""
        self._done = True
        self._stop.set()

    def __del__(self) -> None:
        self._stop.set()


def prefetch(make_iterator: Callable[[], Iterator[T]], size: int = 2) -> Iterator[T]:
    """Run ``make_iterator()`` in a background thread, up to ``size`` items ahead.

    The thread starts at once, so the first items are being prepared before
    they are asked for. Exceptions raised by the producer are re-raised in the
    consumer; ``close()`` on the returned iterator (or dropping it) stops the
    thread.

    Args:
      make_iterator: builds the iterator to run in the thread.
      size: queue bound; ``0`` runs synchronously in the caller.

    Returns:
      An iterator over the same items.

    Example:
      >>> list(prefetch(lambda: iter(range(3))))
      [0, 1, 2]
    """
    if size <= 0:
        return make_iterator()
    return _Prefetcher(make_iterator, size)


# --------------------------------------------------------------------------- base


class _PackedDataset:
    """Shared behaviour: epochs, length, public (dict) iteration."""

    layout: Layout
    batch_size: int
    drop_remainder: bool
    num_rows: int
    prefetch: int

    def __init__(self) -> None:
        self._next_epoch = 0

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_remainder:
            return self.num_rows // self.batch_size
        return -(-self.num_rows // self.batch_size)

    def _check_not_empty(self, what: str) -> None:
        if self.num_rows == 0:
            raise DataError(f"the dataset is empty: {what} hold 0 rows; check the input path")
        if len(self) == 0:
            raise DataError(
                f"the dataset yields no batches: {self.num_rows} rows < batch_size "
                f"{self.batch_size} with drop_remainder=True; lower batch_size or set "
                "drop_remainder=False"
            )

    def _blocks(self, epoch: int) -> Iterator[list[np.ndarray]]:
        raise NotImplementedError

    def in_memory_nbytes(self) -> int | None:
        """Bytes of the decoded rows when they are served from memory, else ``None``."""
        return None

    def in_memory_columns(self) -> HostBatch | None:
        """All rows, packed, in stored order, when epochs are served from memory.

        Epoch ``e`` then reads them in :func:`epoch_order` ``(shuffle_seed, e,
        num_rows)``. ``None`` for a streamed dataset (its order comes from a
        shuffle buffer).
        """
        return None

    def _to_host(self, blk: list[np.ndarray]) -> HostBatch:
        i = 0
        floats = ints = None
        if self.layout.n_float:
            floats, i = blk[i], i + 1
        if self.layout.n_int:
            ints, i = blk[i], i + 1
        return HostBatch(floats, ints, blk[i])

    def packed_epoch(self, epoch: int) -> Iterator[HostBatch]:
        """Packed batches of ``epoch`` (prefetched in a background thread)."""

        def make() -> Iterator[HostBatch]:
            for blk in _rebatch(self._blocks(epoch), self.batch_size, self.drop_remainder):
                yield self._to_host(blk)

        return prefetch(make, self.prefetch)

    def packed_groups(
        self, epoch: int, group_size: int, rows: int | None = None
    ) -> Iterator[HostGroup]:
        """The batches of ``epoch`` in groups of ``group_size``, stacked (prefetched).

        The batches are exactly those of :meth:`packed_epoch`, in the same
        order; the last group of the epoch may hold fewer. Each group is
        ``x = (floats[g, rows, n_float] | None, ints[g, rows, n_int] | None)``
        and ``labels[g, rows]``; full batches are a reshaped view of the
        rows, a short last batch (or every batch, when ``rows`` exceeds the
        batch size) is padded with zeros, its real size in ``sizes``.

        Args:
          epoch: epoch number.
          group_size: batches per group (at least 1).
          rows: rows per batch after padding (default: ``batch_size``).

        Returns:
          An iterator of :class:`HostGroup`, prepared in a background thread
          (``ceil(prefetch / group_size)`` groups ahead, at least 2).
        """
        k = max(int(group_size), 1)
        b = self.batch_size
        rows = b if rows is None else int(rows)
        if rows < b:
            raise ValueError(f"rows ({rows}) must be at least batch_size ({b})")

        def make() -> Iterator[HostGroup]:
            for blk in _rebatch(self._blocks(epoch), k * b, False):
                n = _blk_len(blk)
                if self.drop_remainder and n % b:
                    n -= n % b
                    if n == 0:
                        continue
                    blk = _blk_slice(blk, 0, n)
                sizes = (b,) * (n // b) + ((n % b,) if n % b else ())
                parts = _group_block(blk, b, rows)
                i = 0
                floats = ints = None
                if self.layout.n_float:
                    floats, i = parts[i], i + 1
                if self.layout.n_int:
                    ints, i = parts[i], i + 1
                yield HostGroup((floats, ints), parts[i], sizes)

        ahead = max(2, -(-self.prefetch // k)) if self.prefetch > 0 else 0
        return prefetch(make, ahead)

    def iter_epoch(self, epoch: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Batches ``(features, labels)`` of a given epoch (its own shuffle order).

        Args:
          epoch: epoch number; the same number gives the same order.

        Returns:
          An iterator of ``({name: array[b]}, labels[b])``.
        """
        for hb in self.packed_epoch(epoch):
            yield self.layout.unpack(hb.floats, hb.ints), hb.labels

    def __iter__(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Iterate the next epoch (0, 1, 2, ... on successive calls)."""
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        return self.iter_epoch(epoch)

    def example_features(self) -> dict[str, np.ndarray]:
        """Zero-filled features of one batch: the shapes and dtypes a model is built for."""
        out = {}
        for s in self.layout.slots:
            dt = np.float32 if s.block == 0 else np.int32
            out[s.name] = np.zeros((self.batch_size, *s.shape), dt)
        return out


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


# --------------------------------------------------------------------------- in memory


class ArrayDataset(_PackedDataset):
    """Batches from in-memory numpy arrays.

    Args:
      features: ``{name: array[n] | array[n, ...]}``; floats (and bools) become
        ``float32``, integers ``int32``.
      labels: ``array[n]`` (or ``[n, k]``).
      batch_size: rows per batch.
      shuffle_seed: ``None`` keeps the row order; an int reshuffles every epoch
        (deterministically per ``(seed, epoch)``).
      drop_remainder: drop the last, smaller batch.
      prefetch: batches prepared ahead in a background thread (0: none).

    Example:
      >>> x = np.random.rand(100).astype(np.float32)
      >>> ds = ArrayDataset({"x": x}, (x > 0.5).astype(np.float32), batch_size=32, shuffle_seed=0)
      >>> len(ds)
      4
    """

    def __init__(
        self,
        features: Mapping[str, Any],
        labels: Any,
        batch_size: int,
        *,
        shuffle_seed: int | None = None,
        drop_remainder: bool = False,
        prefetch: int = 2,
    ) -> None:
        super().__init__()
        self.batch_size = _check_batch_size(batch_size)
        self.shuffle_seed = shuffle_seed
        self.drop_remainder = drop_remainder
        self.prefetch = prefetch
        labels = np.asarray(labels)
        n = labels.shape[0] if labels.ndim else 0
        specs: list[Any] = []
        floats: list[Any] = []
        ints: list[Any] = []
        for name in sorted(features):
            a = np.asarray(features[name])
            if a.ndim == 0 or a.shape[0] != n:
                raise DataError(
                    f"feature {name!r} has {a.shape[0] if a.ndim else 0} rows but labels have "
                    f"{n}; every feature needs one value per label"
                )
            kind = _numpy_kind(name, a.dtype, "the arrays")
            (floats if kind == "float32" else ints).append(
                a.reshape(n, math.prod(a.shape[1:])).astype(kind)
            )
            specs.append((name, kind, a.shape[1:]))
        if not specs:
            raise DataError("no features given; pass at least one {name: array}")
        self.layout = _make_layout(specs)
        self.num_rows = n
        self._check_not_empty("the arrays")
        if labels.dtype.kind == "f":
            _check_labels(labels, "label", "the labels array", 0)
            labels = labels.astype(np.float32)
        elif labels.dtype.kind == "b":
            labels = labels.astype(np.float32)
        elif labels.dtype.kind in "iu":
            labels = labels.astype(np.int32)
        else:
            raise DataError(f"labels have dtype {labels.dtype}; use numeric labels")
        self._cols: list[np.ndarray] = []
        if floats:
            self._cols.append(np.concatenate(floats, axis=1))
        if ints:
            self._cols.append(np.concatenate(ints, axis=1))
        self._cols.append(labels)

    def _blocks(self, epoch: int) -> Iterator[list[np.ndarray]]:
        return _memory_blocks(self._cols, self.batch_size, self.shuffle_seed, epoch)

    def in_memory_nbytes(self) -> int:
        """Bytes of the packed rows."""
        return sum(c.nbytes for c in self._cols)

    def in_memory_columns(self) -> HostBatch:
        """All rows, packed (see :meth:`_PackedDataset.in_memory_columns`)."""
        return self._to_host(self._cols)


def _numpy_kind(name: str, dtype: np.dtype, where: str) -> str:
    if dtype.kind in "fb":
        return "float32"
    if dtype.kind in "iu":
        return "int32"
    raise DataError(
        f"feature {name!r} in {where} has dtype {dtype}; features must be numeric "
        "(float32) or integer ids (int32): map strings to ids first"
    )


def _check_labels(labels: np.ndarray, label: str, where: str, row_offset: int) -> None:
    if labels.dtype.kind == "f":
        bad = np.isnan(labels)
        if bad.any():
            first = int(np.flatnonzero(bad.reshape(labels.shape[0], -1).any(axis=1))[0])
            raise DataError(
                f"label {label!r} is NaN at row {row_offset + first} of {where} "
                f"({int(bad.sum())} NaN in this block); drop or impute those rows before training"
            )


# --------------------------------------------------------------------------- parquet


def _expand_files(files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """Parquet files of paths, directories or globs, local or any Beam filesystem URI."""
    try:
        return expand_paths(files, accept=lambda p: p.endswith(".parquet"), what="*.parquet files")
    except PathNotFoundError as e:
        raise DataError(str(e)) from None


def _arrow_kind(pa: Any, typ: Any) -> str | None:
    """``"float"``, ``"int"``, ``"bool"`` or ``None`` (unsupported)."""
    if pa.types.is_floating(typ):
        return "float"
    if pa.types.is_integer(typ):
        return "int"
    if pa.types.is_boolean(typ):
        return "bool"
    return None


class ParquetDataset(_PackedDataset):
    """Shuffled batches from Parquet shards, read with pyarrow.

    A dataset that fits in memory (see ``in_memory``) is decoded once and then
    served from memory with a full shuffle each epoch. A larger one is streamed:
    files are read one row group at a time in record batches of
    ``read_batch_size`` rows, so memory stays bounded by the shuffle buffer. Schemas are checked when the dataset is built,
    so a missing feature or an unusable dtype fails before training starts
    (naming the feature and the file); nulls and NaN labels are reported
    with their file and row while reading.

    Args:
      files: Parquet paths, directories (searched for ``*.parquet``) or globs.
      features: names, or ``{name: dtype}`` with dtype ``"float32"``, ``"int32"``
        or ``None`` (automatic: integer columns become ``int32`` ids, float and
        bool columns ``float32``).
      label: label column; integer columns give ``int32`` labels, others
        ``float32`` (override with ``label_dtype``).
      batch_size: rows per batch.
      shuffle_seed: ``None`` reads in file order; an int shuffles file order,
        row-group order and rows (through a buffer of ``shuffle_buffer_size``
        rows), differently but deterministically every epoch.
      drop_remainder: drop the last, smaller batch of each epoch.
      shuffle_buffer_size: rows held for shuffling; at least the dataset size
        gives a full shuffle.
      read_batch_size: rows per pyarrow record batch.
      prefetch: batches prepared ahead in a background thread (0: none).
      label_dtype: ``"float32"`` or ``"int32"`` to force the label dtype.
      shard_index: this process's shard, for multi-host training.
      num_shards: number of shards; files are dealt round-robin
        (``files[shard_index::num_shards]``).
      in_memory: keep the decoded rows in memory after the first pass and
        shuffle them fully every epoch (``True``), or stream with the shuffle
        buffer (``False``). ``None`` decides from the Parquet metadata: in
        memory when the decoded rows take at most ``memory_limit_bytes``.
        The choice, not the cache state, fixes the order, so a restarted run
        sees the same batches.
      memory_limit_bytes: threshold for ``in_memory=None`` (default 1 GiB).

    Raises:
      DataError: a file is missing, a feature or the label is missing from a
        file, a column has an unusable dtype, or the dataset is empty.

    Example:
      >>> ds = ParquetDataset("data/train", ["age", "hours"], "label", batch_size=256,
      ...                     shuffle_seed=0)
      >>> for features, labels in ds:
      ...     pass
    """

    def __init__(
        self,
        files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        features: Sequence[str] | Mapping[str, str | None],
        label: str,
        batch_size: int,
        *,
        shuffle_seed: int | None = None,
        drop_remainder: bool = False,
        shuffle_buffer_size: int = 100_000,
        read_batch_size: int = 65_536,
        prefetch: int = 4,
        label_dtype: str | None = None,
        shard_index: int = 0,
        num_shards: int = 1,
        in_memory: bool | None = None,
        memory_limit_bytes: int = 1 << 30,
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__()
        self.batch_size = _check_batch_size(batch_size)
        self.shuffle_seed = shuffle_seed
        self.drop_remainder = drop_remainder
        self.shuffle_buffer_size = max(int(shuffle_buffer_size), 1)
        self.read_batch_size = max(int(read_batch_size), 1)
        self.prefetch = prefetch
        self.label = label
        all_files = _expand_files(files)
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index {shard_index} must be in [0, num_shards={num_shards})")
        self.files = all_files[shard_index::num_shards]
        self.shard_index, self.num_shards = shard_index, num_shards
        if not self.files:
            raise DataError(
                f"shard {shard_index} of {num_shards} gets no files ({len(all_files)} files in "
                "all); write at least as many Parquet shards as processes"
            )
        wanted = (
            {n: None for n in features}
            if not isinstance(features, Mapping)
            else {n: (None if d is None else str(np.dtype(d))) for n, d in features.items()}
        )
        if not wanted:
            raise DataError("no features given; pass a list of column names")
        if label in wanted:
            raise DataError(f"label {label!r} is also listed as a feature; remove it from features")

        kinds: dict[str, str] = {}
        label_kind: str | None = label_dtype and str(np.dtype(label_dtype))
        self.num_rows = 0
        self._row_groups: dict[str, list[int]] = {}
        for path in self.files:
            try:
                meta = pq.ParquetFile(path).metadata
            except Exception as e:
                raise DataError(f"cannot read Parquet file {path}: {e}") from e
            schema = meta.schema.to_arrow_schema()
            for name, want in wanted.items():
                kinds[name] = self._column_kind(pa, schema, name, want, kinds.get(name), path)
            label_kind = self._column_kind(pa, schema, label, label_kind, label_kind, path, True)
            self.num_rows += meta.num_rows
            self._row_groups[path] = [
                meta.row_group(i).num_rows for i in range(meta.num_row_groups)
            ]
        self._label_kind = label_kind or "float32"
        self.layout = _make_layout([(n, kinds[n], ()) for n in wanted])
        self._float_names = [s.name for s in self.layout.slots if s.block == 0]
        self._int_names = [s.name for s in self.layout.slots if s.block == 1]
        self._check_not_empty(f"{len(self.files)} file(s) ({self.files[0]}, ...)")
        self._row_bytes = 4 * (self.layout.n_float + self.layout.n_int + 1)
        self.in_memory = (
            self.num_rows * self._row_bytes <= memory_limit_bytes
            if in_memory is None
            else in_memory
        )
        self._cache: list[np.ndarray] | None = None
        self._cache_lock = threading.Lock()

    @staticmethod
    def _column_kind(
        pa: Any,
        schema: Any,
        name: str,
        want: str | None,
        seen: str | None,
        path: str,
        is_label: bool = False,
    ) -> str:
        what = "label" if is_label else "feature"
        idx = schema.get_field_index(name)
        if idx < 0:
            cols = ", ".join(schema.names[:20]) + (" ..." if len(schema.names) > 20 else "")
            raise DataError(
                f"{what} {name!r} is missing from {path} (columns: {cols}); fix the name or "
                "regenerate the file"
            )
        typ = schema.field(idx).type
        kind = _arrow_kind(pa, typ)
        if kind is None:
            hint = (
                "map strings to integer ids first (the vocabulary in preprocess.json)"
                if pa.types.is_string(typ)
                or pa.types.is_large_string(typ)
                or pa.types.is_binary(typ)
                or pa.types.is_dictionary(typ)
                else "only scalar numeric columns are supported"
            )
            raise DataError(f"{what} {name!r} in {path} has type {typ}; {hint}")
        target = want or seen or ("int32" if kind == "int" else "float32")
        if target not in ("float32", "int32"):
            raise DataError(
                f"{what} {name!r}: dtype {target} is not supported; use float32 or int32"
            )
        if target == "int32" and kind == "float":
            raise DataError(
                f"{what} {name!r} in {path} is {typ} but int32 is expected "
                f"({'requested' if want else 'as in an earlier file'}); integer ids must be "
                "stored as integers, or request float32 for this column"
            )
        return target

    def _convert(self, rb: Any, path: str, row_offset: int) -> list[np.ndarray]:
        import pyarrow as pa
        import pyarrow.compute as pc

        n = rb.num_rows
        out: list[np.ndarray] = []

        def column(name: str) -> Any:
            col = rb.column(name)
            if col.null_count:
                raise DataError(
                    f"{'label' if name == self.label else 'feature'} {name!r} has "
                    f"{col.null_count} null value(s) in {path} (rows {row_offset}.."
                    f"{row_offset + n - 1}); impute or drop them before training"
                )
            return col

        if self._float_names:
            mat = np.empty((n, len(self._float_names)), np.float32)
            for j, name in enumerate(self._float_names):
                mat[:, j] = column(name).to_numpy(zero_copy_only=False)
            out.append(mat)
        if self._int_names:
            mat = np.empty((n, len(self._int_names)), np.int32)
            for j, name in enumerate(self._int_names):
                try:
                    col = pc.cast(column(name), pa.int32(), safe=True)
                except pa.ArrowInvalid as e:
                    raise DataError(
                        f"feature {name!r} in {path} has values outside the int32 range: {e}"
                    ) from e
                mat[:, j] = col.to_numpy(zero_copy_only=False)
            out.append(mat)
        lab = column(self.label).to_numpy(zero_copy_only=False)
        if self._label_kind == "float32":
            lab = lab.astype(np.float32, copy=False)
            _check_labels(lab, self.label, path, row_offset)
        else:
            lab = lab.astype(np.int32, copy=False)
        out.append(lab)
        return out

    def _read(self, rng: np.random.Generator | None) -> Iterator[list[np.ndarray]]:
        import pyarrow.parquet as pq

        files = list(self.files)
        if rng is not None:
            files = [files[i] for i in rng.permutation(len(files))]
        cols = [*self.layout.names, self.label]
        for path in files:
            sizes = self._row_groups[path]
            starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
            groups = list(range(len(sizes)))
            if rng is not None:
                groups = [groups[i] for i in rng.permutation(len(groups))]
            with pq.ParquetFile(path) as pf:
                for g in groups:
                    offset = int(starts[g])
                    for rb in pf.iter_batches(
                        batch_size=self.read_batch_size, row_groups=[g], columns=cols
                    ):
                        if rb.num_rows:
                            yield self._convert(rb, path, offset)
                        offset += rb.num_rows

    def _cached(self) -> list[np.ndarray]:
        with self._cache_lock:
            if self._cache is None:
                blocks = list(self._read(None))
                self._cache = [np.concatenate(parts) for parts in zip(*blocks, strict=True)]
            return self._cache

    def in_memory_nbytes(self) -> int | None:
        """Bytes of the decoded rows (from the metadata) when ``in_memory``, else ``None``."""
        return self.num_rows * self._row_bytes if self.in_memory else None

    def in_memory_columns(self) -> HostBatch | None:
        """All rows, decoded and packed, when ``in_memory`` (read now if not yet cached)."""
        return self._to_host(self._cached()) if self.in_memory else None

    def _blocks(self, epoch: int) -> Iterator[list[np.ndarray]]:
        if self.in_memory:
            yield from _memory_blocks(self._cached(), self.batch_size, self.shuffle_seed, epoch)
            return
        if self.shuffle_seed is None:
            yield from self._read(None)
            return
        rng = np.random.default_rng([self.shuffle_seed, epoch])
        buf = _ShuffleBuffer(min(self.shuffle_buffer_size, self.num_rows), rng)
        for blk in self._read(rng):
            yield from buf.push(blk)
        yield from buf.drain()
