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
from typing import Any

from jaxtx.components import (
    Evaluator,
    ExampleGen,
    ExampleValidator,
    ImportSchema,
    InfraValidator,
    Pusher,
    SchemaGen,
    StatisticsGen,
    Trainer,
    Transform,
)
from jaxtx.core.settings import Settings

from ._pipeline import Pipeline

__all__ = ["DEMO_SCHEMA", "LABEL", "create_pipeline", "ensure_demo_data", "preprocess"]

LABEL = "income_over_50k"
MODEL_NAME = "census"

#: The curated schema of the demo data (drift and skew comparators switched on).
DEMO_SCHEMA = str(Path(__file__).with_name("demo_schema.yaml"))


def ensure_demo_data(root: str | Path, *, rows: int = 20_000, seed: int = 0) -> Path:
    """Generate the demo data below ``root`` unless it is already there with these settings."""
    root = Path(root)
    marker = root / "generated.json"
    settings = {"rows": rows, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == settings:
        return root
    from .demo_data import write_demo_data  # numpy and pandas only to write the data

    write_demo_data(root, rows=rows, seed=seed)
    marker.write_text(json.dumps(settings))
    return root


def preprocess(inputs: Any) -> dict[str, Any]:
    """The demo's feature engineering (fitted on the train split, fused into the model)."""
    from jaxtx.trainer import transform as tx  # jax is loaded when Transform runs, not before

    out = {
        name: tx.scale_to_z_score(tx.fill_missing(inputs[name], "mean"))
        for name in ("age", "education_num", "hours_per_week")
    }
    out["capital_gain"] = tx.scale_to_z_score(tx.log1p(inputs["capital_gain"]))
    out["capital_loss"] = tx.scale_to_z_score(tx.log1p(inputs["capital_loss"]))
    out["age_bucket"] = tx.bucketize(inputs["age"], num_buckets=8)
    for name in (
        "workclass",
        "education",
        "marital_status",
        "occupation",
        "relationship",
        "race",
        "sex",
    ):
        out[name] = tx.vocabulary(tx.fill_missing(inputs[name], "most_frequent"), num_oov_buckets=1)
    out["native_region"] = tx.hash_strings(inputs["native_region"], num_buckets=8)
    return out


def create_pipeline(
    data_root: str,
    *,
    home: str | None = None,
    schema_file: str = DEMO_SCHEMA,
    name: str = "census-demo",
    serving_dir: str | None = None,
    epochs: int = 8,
    train_model: bool = True,
) -> Pipeline:
    """The demo pipeline over ``data_root`` (see :func:`ensure_demo_data`).

    Args:
      data_root: holds ``span-N/*.csv`` and ``serving/*.jsonl``.
      home: jaxtx working folder (artifacts, MLflow store); default ``./.jaxtx``.
      schema_file: the curated schema the data is validated against.
      name: pipeline name (MLflow experiment, Prefect flow).
      serving_dir: where Pusher copies blessed models (default ``<home>/serving``).
      epochs: training epochs.
      train_model: ``False`` stops after validation (data checks only).
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
        validated = ExampleValidator(
            statistics=stats,
            schema=curated,
            examples=examples,
            baseline_statistics=previous_stats,
            serving_statistics=serving_stats,
        )
        if train_model:
            _model_path(p, examples, validated, home, serving_dir, epochs)
    return p


def _model_path(
    p: Pipeline,
    examples: Any,
    validated: Any,
    home: str | None,
    serving_dir: str | None,
    epochs: int,
) -> None:
    transform = Transform(examples=examples, preprocessing_fn=preprocess, passthrough=[LABEL])
    transform.after(validated)
    trainer = Trainer(
        examples=transform.outputs.transformed_examples,
        transform_graph=transform.outputs.transform_graph,
        label=LABEL,
        epochs=epochs,
        batch_size=256,
        learning_rate=3e-3,
        name=MODEL_NAME,
    )
    evaluator = Evaluator(
        model=trainer,
        examples=examples,
        label=LABEL,
        slicing_specs=[[], ["sex"], ["race"], ["sex", "race"]],
        min_slice_size=50,
        sensitive_features=["sex"],
        fairness_thresholds=[0.3, 0.5, 0.7],
        thresholds=[
            {"metric": "auc", "lower": 0.75},
            {"metric": "auc", "change": {"direction": "higher_is_better", "absolute": 0.01}},
            {"metric": "fairness.equalized_odds_difference@0.5", "upper": 0.35},
        ],
        registered_model_name=MODEL_NAME,
    )
    infra = InfraValidator(model=trainer, examples=examples)
    base = Settings.resolve(home=home).home
    Pusher(
        model=trainer,
        model_blessing=evaluator.outputs.blessing,
        infra_blessing=infra,
        serving_dir=serving_dir or str(base / "serving"),
        registered_model_name=MODEL_NAME,
    )
