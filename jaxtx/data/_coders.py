"""A Beam coder for Arrow record batches and tables whose size estimate costs nothing.

Beam samples the size of elements on every edge of a pipeline; with its
default (pickle) coder each sample pickles a whole batch, copying megabytes
for a number. :class:`ArrowCoder` encodes exactly as that default does
(pickle, highest protocol) and estimates the size from the sizes of the
value's buffers.
"""

from __future__ import annotations

import pickle
from typing import Any

import apache_beam as beam
import pyarrow as pa

__all__ = ["ArrowCoder", "register_arrow_coders"]


class ArrowCoder(beam.coders.Coder):
    """Pickles ``pa.RecordBatch`` / ``pa.Table`` values; sizes them by their buffers."""

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Any:
        return pickle.loads(encoded)

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, value: Any) -> int:
        # The buffers' sizes: O(columns), where ``nbytes`` walks slices' offsets.
        return int(value.get_total_buffer_size())

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


def register_arrow_coders() -> None:
    """Use :class:`ArrowCoder` for PCollections typed ``pa.RecordBatch`` or ``pa.Table``."""
    beam.coders.registry.register_coder(pa.RecordBatch, ArrowCoder)
    beam.coders.registry.register_coder(pa.Table, ArrowCoder)
