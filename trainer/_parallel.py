"""Data parallelism with ``jax.sharding``: batch split over devices, params replicated.

A 1-D :class:`jax.sharding.Mesh` with axis ``"data"`` spans the devices.
Batches are placed with ``NamedSharding(mesh, P("data"))`` (row ``i`` of the
batch goes to device ``i * n_devices // batch_size``) and the train state with
``NamedSharding(mesh, P())`` (a full copy on every device). XLA then computes
each device's share of the gradient and all-reduces it, so a step on ``n``
devices gives the same result as on one, up to float summation order.

Several processes: after ``jax.distributed.initialize()`` (see
:mod:`jaxtx.trainer.distributed`) ``jax.devices()`` lists every device of
every process and the mesh spans them. Each process passes only its own rows
of a batch (the rows its devices hold) and they are assembled into one global
array with ``jax.make_array_from_process_local_data``; replicated values are
built the same way from each process's identical copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._types import PyTree

__all__ = ["DATA_AXIS", "make_mesh", "replicate", "shard_batch"]

DATA_AXIS = "data"


def make_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D data-parallel mesh.

    Args:
      devices: devices to use; default ``jax.devices()`` (every device of every
        process).

    Returns:
      ``Mesh(devices, ("data",))``.

    Example:
      >>> mesh = make_mesh()
      >>> mesh.shape["data"] == jax.device_count()
      True
    """
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.array(devs), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of a value copied on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The sharding of a batch split along its first axis over ``mesh``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Copy every array of ``tree`` to every device of ``mesh``.

    With several processes every process passes the same values (the same
    seed, or the same checkpoint) and each fills its own devices.
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(a: Any) -> Any:
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return a if a.sharding == sharding else _reshard(a, sharding)
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            data = jax.make_array_from_process_local_data(
                sharding, np.asarray(jax.random.key_data(a))
            )
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
        return jax.make_array_from_process_local_data(sharding, np.asarray(a))

    return jax.tree.map(one, tree)


def _reshard(a: jax.Array, sharding: NamedSharding) -> jax.Array:
    return jax.jit(lambda x: x, out_shardings=sharding)(a)


def shard_batch(tree: PyTree, mesh: Mesh) -> PyTree:
    """Split every array of ``tree`` along axis 0 over ``mesh``.

    In a single process the arrays are the whole batch; with several processes
    each passes its own rows and they are assembled into global arrays.

    Args:
      tree: host arrays, each with the batch as its first axis (divisible by the
        number of local devices).
      mesh: the data-parallel mesh.

    Returns:
      The same structure of sharded ``jax.Array``s.
    """
    sharding = batch_sharded(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), tree)


def local_device_count(mesh: Mesh) -> int:
    """Number of the mesh's devices attached to this process."""
    pid = jax.process_index()
    return sum(1 for d in mesh.devices.flat if d.process_index == pid)
