"""Device-resident training data: the whole split placed on the devices once.

When the training rows of an in-memory dataset fit in a share of device
memory, :class:`~jaxtx.trainer.TrainLoop` copies them to the devices once
(the packed ``floats``, ``ints`` and ``labels`` blocks, their rows split over
the mesh's ``"data"`` axis) and, each epoch, sends only the epoch's row order:
an ``int32[steps, rows]`` matrix of row indices (padding rows point to an
all-zero row after the data), the
rows of :func:`~jaxtx.trainer._data.epoch_order` cut into batches exactly as
the host pipeline cuts them. The compiled call then gathers each batch on
the devices (:func:`gather_batch`), so a step sees the same rows, padding and
weights as on the host path and the results are the same, bit for bit.

The order is computed on the host with the dataset's seeded numpy generator
(tens of milliseconds per million rows) rather than with
``jax.random.permutation``, whose sort takes seconds per million rows on a
CPU backend, and whose order would differ from the host pipeline's.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._data import HostBatch, epoch_order
from ._parallel import DATA_AXIS, local_device_count

__all__ = ["ResidentData", "device_memory_bytes", "gather_batch", "place", "resident_columns"]


class ResidentData(NamedTuple):
    """A training split on the devices and how its epochs are cut into batches.

    Attributes:
      x: ``(floats[n_pad, n_float] | None, ints[n_pad, n_int] | None)``, rows
        split over the mesh (``n_pad``: ``num_rows + 1`` rounded up to a
        multiple of the device count; the rows from ``num_rows`` on are zeros,
        the padding of short batches).
      labels: ``[n_pad, ...]``, split the same way.
      num_rows: real rows.
      batch_size: rows per batch (the dataset's).
      rows: rows per batch on the devices (``batch_size`` rounded up to a
        multiple of the device count; the extra rows have weight 0).
      steps: batches per epoch.
      shuffle_seed: the dataset's seed (``None``: stored order).
      drop_remainder: whether a last, smaller batch is dropped.
    """

    x: tuple[jax.Array | None, jax.Array | None]
    labels: jax.Array
    num_rows: int
    batch_size: int
    rows: int
    steps: int
    shuffle_seed: int | None
    drop_remainder: bool

    def indices(self, epoch: int) -> np.ndarray:
        """The rows of each batch of ``epoch``: ``int32[steps, rows]``, ``num_rows`` for padding."""
        n, b = self.num_rows, self.batch_size
        perm = epoch_order(self.shuffle_seed, epoch, n)
        order = np.arange(n, dtype=np.int32) if perm is None else perm.astype(np.int32)
        full = n // b
        out = np.full((self.steps, self.rows), n, np.int32)
        out[:full, :b] = order[: full * b].reshape(full, b)
        if self.steps > full:  # the last, smaller batch
            out[full, : n - full * b] = order[full * b :]
        return out


def device_memory_bytes(device: Any) -> int:
    """Memory of ``device``: its allocator limit, or for CPU devices their share of the RAM.

    Args:
      device: a ``jax.Device``.

    Returns:
      Bytes.
    """
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cpus = [d for d in jax.local_devices() if d.platform == device.platform]
    return int(ram // max(len(cpus), 1))


def resident_columns(data: Any, mode: bool | str, mesh: Mesh, fraction: float) -> HostBatch | None:
    """The rows to place on the devices, or ``None`` to use the host pipeline.

    Args:
      data: the training data given to ``fit``.
      mode: ``"auto"``, ``True`` or ``False`` (``TrainLoop(device_resident=...)``).
      mesh: the data-parallel mesh.
      fraction: the share of each device's memory the rows may take (``"auto"``).

    Returns:
      The packed rows (``"auto"``: when they fit), else ``None``.

    Raises:
      ValueError: ``mode=True`` but the data is not served from memory, or
        there are several processes.
    """
    if mode is False:
        return None
    nbytes = data.in_memory_nbytes() if hasattr(data, "in_memory_nbytes") else None
    reason = None
    if nbytes is None:
        reason = (
            "it is not an in-memory dataset (ArrayDataset, or ParquetDataset with in_memory); "
            "a streamed ParquetDataset or an iterable of batches stays on the host"
        )
    elif jax.process_count() > 1:
        reason = "several processes feed the mesh (each process streams its own rows)"
    if reason is not None:
        if mode is True:
            raise ValueError(f"device_resident=True cannot place the training data: {reason}")
        return None
    if mode == "auto":
        assert nbytes is not None  # checked above
        d = local_device_count(mesh)
        per_device = math.ceil(nbytes / d) + 4 * len(data) * data.batch_size
        if per_device > fraction * min(device_memory_bytes(dv) for dv in mesh.devices.flat):
            return None
    return data.in_memory_columns()


def place(cols: HostBatch, data: Any, mesh: Mesh, rows: int) -> ResidentData:
    """Copy packed rows to the devices of ``mesh``, rows split over its ``"data"`` axis.

    Args:
      cols: all rows (:func:`resident_columns`).
      data: the dataset (``batch_size``, ``shuffle_seed``, ``drop_remainder``).
      mesh: the data-parallel mesh.
      rows: rows per batch on the devices.

    Returns:
      The :class:`ResidentData`.
    """
    n = len(cols)
    d = local_device_count(mesh)
    pad = 1 + (-(n + 1) % d)
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    def put(a: np.ndarray | None) -> jax.Array | None:
        if a is None:
            return None
        return jax.device_put(np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]), sharding)

    return ResidentData(
        x=(put(cols.floats), put(cols.ints)),
        labels=put(cols.labels),  # type: ignore[arg-type]
        num_rows=n,
        batch_size=int(data.batch_size),
        rows=rows,
        steps=len(data),
        shuffle_seed=data.shuffle_seed,
        drop_remainder=bool(data.drop_remainder),
    )


def _exact_sum_scatter(a: jax.Array) -> jax.Array:
    """Sum over the ``"data"`` axis and keep this device's rows, exactly.

    Every row is non-zero on at most one device, so the sum only moves
    values; floats are summed as their bit patterns so that nothing (not even
    the sign of a zero) changes.
    """
    if jnp.issubdtype(a.dtype, jnp.floating):
        bits = jax.lax.bitcast_convert_type(a, jnp.dtype(f"int{8 * a.dtype.itemsize}"))
        summed = jax.lax.psum_scatter(bits, DATA_AXIS, scatter_dimension=0, tiled=True)
        return jax.lax.bitcast_convert_type(summed, a.dtype)
    return jax.lax.psum_scatter(a, DATA_AXIS, scatter_dimension=0, tiled=True)


def gather_batch(
    x: tuple[jax.Array | None, jax.Array | None],
    labels: jax.Array,
    num_rows: jax.Array,
    idx: jax.Array,
    mesh: Mesh,
) -> tuple[tuple[jax.Array | None, jax.Array | None], jax.Array, jax.Array]:
    """The batch with rows ``idx`` of the resident data, split over the mesh.

    On one device this is a gather. On several, each device takes the
    requested rows it holds (zeros elsewhere) and a sum-scatter hands every
    device its share of the batch: row ``i`` goes to device
    ``i * n_devices // rows``, as for a batch sent from the host. Padding rows
    are zeros with weight 0, as on the host path.

    Args:
      x: the resident ``(floats, ints)`` blocks (:attr:`ResidentData.x`).
      labels: the resident labels.
      num_rows: the real rows (:attr:`ResidentData.num_rows`); higher indices
        are padding.
      idx: ``int32[rows]``, replicated (:meth:`ResidentData.indices`).
      mesh: the mesh the data is split over.

    Returns:
      ``((floats, ints), labels, weights)`` of the batch, rows split over the mesh.
    """
    blocks = [b for b in (*x, labels) if b is not None]
    weights = (idx < num_rows).astype(jnp.float32)
    if mesh.size == 1:
        out = [jnp.take(b, idx, axis=0, mode="clip") for b in blocks]
    else:
        out = _gather_sharded(blocks, idx, mesh)
        weights = jax.lax.with_sharding_constraint(
            weights, NamedSharding(mesh, PartitionSpec(DATA_AXIS))
        )
    it = iter(out)
    gx = tuple(None if b is None else next(it) for b in x)
    return (gx[0], gx[1]), next(it), weights


def _gather_sharded(blocks: list[jax.Array], idx: jax.Array, mesh: Mesh) -> list[jax.Array]:
    """Rows ``idx`` of row-sharded ``blocks``, as row-sharded batches (see :func:`gather_batch`)."""

    def local(idx: jax.Array, *blocks: jax.Array) -> list[jax.Array]:
        n_local = blocks[0].shape[0]
        pos = idx - jax.lax.axis_index(DATA_AXIS) * n_local
        mine = (pos >= 0) & (pos < n_local)
        safe = jnp.where(mine, pos, 0)
        out = []
        for b in blocks:
            g = jnp.take(b, safe, axis=0, mode="clip")
            mask = mine.reshape(-1, *(1,) * (g.ndim - 1))
            out.append(_exact_sum_scatter(jnp.where(mask, g, jnp.zeros((), g.dtype))))
        return out

    rows = PartitionSpec(DATA_AXIS)
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec(), *(rows,) * len(blocks)),
        out_specs=[rows] * len(blocks),
    )(idx, *blocks)
