"""The demo pipeline: census-like data from raw CSV spans to validated examples.

    jaxtx demo                       # generate data (once) and run everything
    jaxtx run jaxtx.pipelines.demo:create_pipeline -p data_root=/path/to/data

Graph::

    ExampleGen (latest span) ──> StatisticsGen ──> SchemaGen (inferred, for curation)
                                       │
    ExampleGen (span before) ──> StatisticsGen ─┐
                                       ▼        ▼
    ImportSchema (curated) ─────> ExampleValidator (anomalies + drift + skew)
                                       ▲
    ExampleGen (serving log) ──> StatisticsGen ─┘
"""

from __future__ import annotations

import json
from pathlib import Path

from jaxtx.components.example_gen import ExampleGen
from jaxtx.components.example_validator import ExampleValidator
from jaxtx.components.schema_gen import ImportSchema, SchemaGen
from jaxtx.components.statistics_gen import StatisticsGen

from ._pipeline import Pipeline
from .demo_data import write_demo_data

__all__ = ["DEMO_SCHEMA", "create_pipeline", "ensure_demo_data"]

#: The curated schema of the demo data (drift and skew comparators switched on).
DEMO_SCHEMA = str(Path(__file__).with_name("demo_schema.yaml"))


def ensure_demo_data(root: str | Path, *, rows: int = 20_000, seed: int = 0) -> Path:
    """Generate the demo data below ``root`` unless it is already there with these settings."""
    root = Path(root)
    marker = root / "generated.json"
    settings = {"rows": rows, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == settings:
        return root
    write_demo_data(root, rows=rows, seed=seed)
    marker.write_text(json.dumps(settings))
    return root


def create_pipeline(
    data_root: str,
    *,
    home: str | None = None,
    schema_file: str = DEMO_SCHEMA,
    name: str = "census-demo",
) -> Pipeline:
    """The demo pipeline over ``data_root`` (see :func:`ensure_demo_data`).

    Args:
      data_root: holds ``span-N/*.csv`` and ``serving/*.jsonl``.
      home: jaxtx working folder (artifacts, MLflow store); default ``./.jaxtx``.
      schema_file: the curated schema the data is validated against.
      name: pipeline name (MLflow experiment, Prefect flow).
    """
    pattern = f"{data_root}/span-{{SPAN}}/*.csv"
    with Pipeline(name, home=home, description=__doc__ or "") as p:
        examples = ExampleGen(input_pattern=pattern, schema_file=schema_file)
        previous = ExampleGen(
            input_pattern=pattern, span="latest-1", schema_file=schema_file
        ).with_id("PreviousExampleGen")
        serving = ExampleGen(
            input_pattern=f"{data_root}/serving/*.jsonl", split_names=["serving"], split_ratios=[1]
        ).with_id("ServingExampleGen")
        stats = StatisticsGen(examples=examples)
        previous_stats = StatisticsGen(examples=previous).with_id("PreviousStatisticsGen")
        serving_stats = StatisticsGen(examples=serving).with_id("ServingStatisticsGen")
        SchemaGen(statistics=stats)
        curated = ImportSchema(schema_file=schema_file)
        ExampleValidator(
            statistics=stats,
            schema=curated,
            baseline_statistics=previous_stats,
            serving_statistics=serving_stats,
        )
    return p
