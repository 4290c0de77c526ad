"""Training over several processes: one per host on a cluster, or ``N`` on this machine.

Every process runs the same program. It calls :func:`initialize` first (before
anything else uses JAX), then builds the same datasets and the same
:class:`~jaxtx.trainer.TrainLoop` as a one-process run. The loop's mesh spans
the devices of all processes; each process feeds only its rows of each global
batch (:class:`ProcessShard`, applied by the loop itself to an
:class:`~jaxtx.trainer.ArrayDataset` or a
:class:`~jaxtx.trainer.ParquetDataset`), so the global batches, and the
parameters, are those of the one-process run. Writes happen once:
:class:`~jaxtx.trainer.Checkpoint` is written through Orbax (each
replicated array once, its slices split over the processes; the metadata and
the commit, a rename of the finished folder, by process 0),
:meth:`TrainLoop.export` writes on process 0 while the others wait at a
barrier, and other files are written under ``if is_primary():``. Every process restores from the same
checkpoint directory (it must be on storage they all reach).

On this machine, :func:`launch` starts and supervises the processes::

    from jaxtx.trainer import distributed
    result = distributed.launch("mypkg.train:main", {"data": "data/train"}, processes=2)

On a cluster, each host runs the worker module itself (``args.pkl``, if
any, is ``cloudpickle.dump(kwargs)``; without it ``main()`` gets no
arguments)::

    python -m jaxtx.trainer.worker mypkg.train:main --kwargs=args.pkl \\
        --coordinator=host0:1234 --num-processes=4 --process-id=$RANK

or sets ``JAXTX_COORDINATOR_ADDRESS``, ``JAXTX_NUM_PROCESSES`` and
``JAXTX_PROCESS_ID`` instead of the flags (with none of them, JAX detects the
cluster on SLURM, Open MPI, Kubernetes and Cloud TPU).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from ._launch import (
    ENV_COORDINATOR,
    ENV_NUM_PROCESSES,
    ENV_PROCESS_ID,
    Launch,
    WorkerError,
    WorkerFailure,
    free_port,
    launch,
    start,
)
from ._process_data import ProcessShard

__all__ = [
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "Launch",
    "ProcessShard",
    "WorkerError",
    "WorkerFailure",
    "barrier",
    "free_port",
    "host_copy",
    "initialize",
    "is_primary",
    "launch",
    "start",
]


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str = "gloo",
    timeout_s: int = 300,
) -> None:
    """Join the training processes: ``jax.distributed.initialize`` with CPU collectives on.

    Call it first in every process, before anything else uses JAX. Missing
    arguments come from ``JAXTX_COORDINATOR_ADDRESS``, ``JAXTX_NUM_PROCESSES``
    and ``JAXTX_PROCESS_ID``; when those are unset too, JAX detects the
    cluster (SLURM, Open MPI, Kubernetes, Cloud TPU). A second call does
    nothing, so a program that calls it also runs under
    ``python -m jaxtx.trainer.worker`` (which calls it first).

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator service.
      num_processes: number of processes.
      process_id: this process's index, ``0 .. num_processes-1``.
      cpu_collectives: ``jax_cpu_collectives_implementation`` (``"gloo"``
        over TCP, or ``"mpi"``), so that CPU devices of different processes
        can all-reduce.
      timeout_s: how long to wait for all processes to join.
    """
    if jax.distributed.is_initialized():
        return
    address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    n = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    pid = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=n,
        process_id=pid,
        initialization_timeout=int(timeout_s),
    )


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def is_primary() -> bool:
    """Whether this is process 0, the one that writes files other than checkpoints."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (nothing with one process).

    Args:
      name: a label for the barrier, the same in every process.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def host_copy(tree: Any) -> Any:
    """Numpy copies of the replicated arrays of ``tree`` (parameters), read from this process.

    Args:
      tree: a pytree of ``jax.Array`` (fully replicated, or fully addressable).

    Returns:
      The same structure of ``numpy.ndarray``.
    """

    def one(a: Any) -> Any:
        if not isinstance(a, jax.Array):
            return a
        if a.is_fully_addressable:
            return np.asarray(jax.device_get(a))
        if a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        raise ValueError(
            f"an array of shape {a.shape} is split over several processes; only replicated "
            "values (parameters, metrics) can be copied to one host"
        )

    return jax.tree.map(one, tree)
