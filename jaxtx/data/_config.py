"""Split configuration and the ingestion result."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from ._common import (
    _SPLIT_NAME,
    IngestError,
)


@dataclass(frozen=True)
class SplitConfig:
    """How examples are divided into splits.

    Attributes:
      names: split names (also directory names), unique.
      buckets: relative size of each split, e.g. ``(2, 1)`` for 2:1; positive ints.
      partition_feature: if set, the split of a row depends only on this
        column's value, so all rows sharing a value land in one split.
    """

    names: tuple[str, ...] = ("train", "eval")
    buckets: tuple[int, ...] = (2, 1)
    partition_feature: str | None = None

    def __post_init__(self) -> None:
        names = tuple(self.names) if not isinstance(self.names, str) else (self.names,)
        buckets = tuple(self.buckets)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "buckets", buckets)
        if not names:
            raise IngestError("SplitConfig.names is empty; give at least one split name.")
        bad = [n for n in names if not isinstance(n, str) or not _SPLIT_NAME.fullmatch(n)]
        if bad:
            raise IngestError(
                f"Invalid split name(s) {bad!r}: use letters, digits, '_', '-' or '.', "
                "starting with a letter or digit."
            )
        if len(set(names)) != len(names):
            raise IngestError(f"Split names must be unique, got {list(names)!r}.")
        if len(buckets) != len(names):
            raise IngestError(
                f"SplitConfig has {len(names)} names {list(names)!r} but {len(buckets)} "
                f"buckets {list(buckets)!r}; give one bucket count per split."
            )
        if any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in buckets):
            raise IngestError(
                f"Split buckets must be positive integers (a ratio such as (2, 1)), "
                f"got {list(buckets)!r}."
            )
        if self.partition_feature is not None and (
            not isinstance(self.partition_feature, str) or not self.partition_feature
        ):
            raise IngestError(
                f"partition_feature must be a column name or None, got {self.partition_feature!r}."
            )


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest` wrote.

    Attributes:
      split_counts: rows written per split (from the Parquet footers).
      num_read: rows read; always ``num_written + num_rejected``.
      num_written: rows written over all splits.
      num_rejected: rows in the quarantine files.
      schema: the Arrow schema of every written shard.
      input_files: the files read, sorted.
      quarantine_files: the quarantine JSONL files (possibly empty files).
      split_files: the Parquet shards of each split.
    """

    split_counts: dict[str, int]
    num_read: int
    num_written: int
    num_rejected: int
    schema: pa.Schema
    input_files: tuple[str, ...]
    quarantine_files: tuple[str, ...]
    split_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
