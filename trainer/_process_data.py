"""One process's share of each global batch, for training over several processes.

With ``N`` processes feeding one data-parallel mesh, global batch ``i`` of an
epoch is the same ``B`` rows, in the same order, as in a one-process run;
process ``p`` holds its rows ``[p * b, (p + 1) * b)`` with ``b = ceil(B / N)``
(the rows that its devices hold in the mesh, which lists the devices process by
process), and ``jax.make_array_from_process_local_data`` assembles the global
batch. Every process yields the same number of batches per epoch (a short last
batch may leave a process 0 rows: its part is all padding, weight 0), so the
collectives of every step line up.

Each process computes the same epoch order (from ``(shuffle_seed, epoch)``)
and keeps only its rows of every batch: the host-to-device copies and the
compute are split, while the decoding of the rows is not (an in-memory
dataset is decoded by every process once; a streamed one is read by every
process every epoch). To split the reading too, give each process its own
files (``ParquetDataset(..., shard_index=p, num_shards=N)``): the global
batch is then the concatenation of the processes' batches, which differs
from a one-process run over all the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ._data import HostBatch, HostGroup, _PackedDataset, prefetch, stack_batches

__all__ = ["ProcessShard"]


class ProcessShard(_PackedDataset):
    """Process ``index`` of ``count``'s rows of every global batch of ``data``.

    Args:
      data: an :class:`ArrayDataset` or :class:`ParquetDataset` describing the
        whole data set (the same on every process); its ``batch_size`` is the
        global batch size.
      index: this process's index (``jax.process_index()``).
      count: number of processes (``jax.process_count()``).

    Attributes:
      batch_size: rows per local batch, ``ceil(global_batch_size / count)``.
      global_batch_size: ``data.batch_size``.

    Example:
      >>> part = ProcessShard(ArrayDataset({"x": x}, y, batch_size=64), 1, 2)
      >>> part.batch_size
      32
    """

    def __init__(self, data: _PackedDataset, index: int, count: int) -> None:
        super().__init__()
        if not 0 <= index < count:
            raise ValueError(f"process index {index} must be in [0, {count})")
        self.data, self.index, self.count = data, int(index), int(count)
        self.layout = data.layout
        self.global_batch_size = data.batch_size
        self.batch_size = -(-data.batch_size // self.count)
        self.drop_remainder = data.drop_remainder
        self.prefetch = data.prefetch
        self.num_rows = data.num_rows

    def __len__(self) -> int:
        """Batches per epoch: the global dataset's."""
        return len(self.data)

    def _bounds(self, n: int) -> tuple[int, int]:
        """This process's rows of a global batch of ``n`` rows."""
        b = self.batch_size
        return min(self.index * b, n), min((self.index + 1) * b, n)

    def _local(self, hb: HostBatch) -> HostBatch:
        lo, hi = self._bounds(len(hb))
        floats = None if hb.floats is None else hb.floats[lo:hi]
        ints = None if hb.ints is None else hb.ints[lo:hi]
        return HostBatch(floats, ints, hb.labels[lo:hi])

    def _local_batches(self, epoch: int) -> Iterator[HostBatch]:
        it = self.data.packed_epoch(epoch)
        try:
            for hb in it:
                yield self._local(hb)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def packed_epoch(self, epoch: int) -> Iterator[HostBatch]:
        """This process's part of each batch of ``epoch`` (possibly 0 rows)."""
        return self._local_batches(epoch)

    def packed_groups(
        self, epoch: int, group_size: int, rows: int | None = None
    ) -> Iterator[HostGroup]:
        """This process's parts, ``group_size`` batches stacked and padded to ``rows`` rows.

        Args:
          epoch: epoch number.
          group_size: batches per group.
          rows: rows per local batch after padding (default: :attr:`batch_size`).

        Returns:
          :class:`HostGroup` s prepared in a background thread; ``sizes``
          holds each part's real rows (0 where the process has none).
        """
        k = max(int(group_size), 1)
        rows = self.batch_size if rows is None else int(rows)
        if rows < self.batch_size:
            raise ValueError(f"rows ({rows}) must be at least batch_size ({self.batch_size})")

        def make() -> Iterator[HostGroup]:
            pending: list[tuple[Any, np.ndarray]] = []
            for hb in self._local_batches(epoch):
                pending.append(((hb.floats, hb.ints), hb.labels))
                if len(pending) == k:
                    yield stack_batches(pending, rows)
                    pending = []
            if pending:
                yield stack_batches(pending, rows)

        return prefetch(make, 2 if self.prefetch > 0 else 0)

    def example_features(self) -> dict[str, np.ndarray]:
        """The global dataset's example batch (parameters do not depend on its rows)."""
        return self.data.example_features()
