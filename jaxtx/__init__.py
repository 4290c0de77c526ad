"""jaxtx: ML pipelines for JAX.

Define a pipeline of typed components in Python, run it locally as a Prefect
flow, review it in MLflow, and reuse every component eagerly on artifacts.

    from jaxtx import Pipeline, component, Examples, Output
"""

__version__ = "0.1.0"

from jaxtx.components import (
    Anomalies,
    Artifact,
    ArtifactCorruptError,
    ArtifactError,
    ArtifactStore,
    Component,
    Examples,
    Node,
    Output,
    PipelineStopped,
    Schema,
    Statistics,
    component,
    load_artifact,
)
from jaxtx.pipelines import Pipeline, PipelineError, PipelineRun, PipelineRunError, run_pipeline

__all__ = [
    "Anomalies",
    "Artifact",
    "ArtifactCorruptError",
    "ArtifactError",
    "ArtifactStore",
    "Component",
    "Examples",
    "Node",
    "Output",
    "Pipeline",
    "PipelineError",
    "PipelineRun",
    "PipelineRunError",
    "PipelineStopped",
    "Schema",
    "Statistics",
    "__version__",
    "component",
    "load_artifact",
    "run_pipeline",
]
