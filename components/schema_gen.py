"""SchemaGen (infer a schema from statistics) and ImportSchema (bring a curated one back)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxtx.validation.schema import infer_schema, load_schema, save_schema

from ._artifacts import Output, Schema, Statistics
from ._component import component

__all__ = ["ImportSchema", "SchemaGen"]


@component
def SchemaGen(
    statistics: Statistics,
    schema: Output[Schema],
    *,
    max_domain_size: int = 100,
    infer_ranges: bool = False,
    infer_min_fraction: bool = False,
) -> dict[str, float]:
    """Infer types, presence and string domains from statistics (TFDV's defaults).

    The result, ``schema.yaml``, is meant to be read and curated by a person,
    then brought back with :func:`ImportSchema` (or ``jaxtx validate --schema``).

    Args:
      statistics: statistics of all splits (every split informs the schema).
      max_domain_size: strings with at most this many distinct values get an
        enumerated domain.
      infer_ranges: record observed min/max of numeric features as their domain.
      infer_min_fraction: give optional features their observed fill rate as
        ``min_fraction`` (default: ``min_count: 1`` only, as TFDV).
    """
    stats = {s: statistics.split(s) for s in statistics.split_names}
    inferred = infer_schema(
        stats,
        max_domain_size=max_domain_size,
        infer_ranges=infer_ranges,
        infer_min_fraction=infer_min_fraction,
    )
    save_schema(inferred, str(schema.path / Schema.SCHEMA_FILE))
    schema.properties["features"] = list(inferred.names)
    return {"num_features": len(inferred.names)}


def _schema_file_digest(params: Mapping[str, Any]) -> str:
    try:
        return hashlib.sha256(Path(params["schema_file"]).read_bytes()).hexdigest()
    except OSError as e:  # the run itself reports the missing file
        return f"unreadable:{e}"


@component(external_fingerprint=_schema_file_digest)
def ImportSchema(schema: Output[Schema], *, schema_file: str) -> dict[str, float]:
    """Import a curated schema file (YAML or JSON) as a Schema artifact.

    The file is parsed and checked first: a malformed schema fails here, naming
    the file, feature and field. The cache keys on the file's content, so an
    edited file is imported again.
    """
    parsed = load_schema(schema_file)
    save_schema(parsed, str(schema.path / Schema.SCHEMA_FILE))
    schema.properties.update(features=list(parsed.names), source=str(Path(schema_file).name))
    return {"num_features": len(parsed.names)}
