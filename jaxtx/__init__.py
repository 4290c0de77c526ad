"""jaxtx: ML pipelines for JAX.

Define a pipeline of typed components in Python, run it locally as a Prefect
flow, review it in MLflow, and reuse every component eagerly on artifacts.

    from jaxtx import Pipeline, component, Examples, Output

Names are imported on first use, so ``import jaxtx.serving`` (a model server)
loads no pipeline, Prefect or training code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jaxtx.core import quiet as _quiet

# Beam's import-time "apitools not found" warning, dropped at that one import.
_quiet.install()

__version__ = "0.1.0"

_EXPORTS = {
    "Anomalies": "jaxtx.components",
    "Artifact": "jaxtx.components",
    "ArtifactCorruptError": "jaxtx.components",
    "ArtifactError": "jaxtx.components",
    "ArtifactStore": "jaxtx.components",
    "Component": "jaxtx.components",
    "Examples": "jaxtx.components",
    "Hyperparameters": "jaxtx.components",
    "InferenceResult": "jaxtx.components",
    "InfraBlessing": "jaxtx.components",
    "ModelBlessing": "jaxtx.components",
    "ModelEvaluation": "jaxtx.components",
    "PushedModel": "jaxtx.components",
    "TransformGraph": "jaxtx.components",
    "Model": "jaxtx.components",
    "Node": "jaxtx.components",
    "Output": "jaxtx.components",
    "PipelineStopped": "jaxtx.components",
    "RunContext": "jaxtx.components",
    "Schema": "jaxtx.components",
    "Statistics": "jaxtx.components",
    "component": "jaxtx.components",
    "load_artifact": "jaxtx.components",
    "Pipeline": "jaxtx.pipelines",
    "PipelineError": "jaxtx.pipelines",
    "PipelineRun": "jaxtx.pipelines",
    "PipelineRunError": "jaxtx.pipelines",
    "run_pipeline": "jaxtx.pipelines",
    "Settings": "jaxtx.core.settings",
}

__all__ = [
    "Anomalies",
    "Artifact",
    "ArtifactCorruptError",
    "ArtifactError",
    "ArtifactStore",
    "Component",
    "Examples",
    "Hyperparameters",
    "InferenceResult",
    "InfraBlessing",
    "Model",
    "ModelBlessing",
    "ModelEvaluation",
    "Node",
    "Output",
    "Pipeline",
    "PipelineError",
    "PipelineRun",
    "PipelineRunError",
    "PipelineStopped",
    "PushedModel",
    "RunContext",
    "Schema",
    "Settings",
    "Statistics",
    "TransformGraph",
    "__version__",
    "component",
    "load_artifact",
    "run_pipeline",
]

if TYPE_CHECKING:
    from jaxtx.components import (
        Anomalies,
        Artifact,
        ArtifactCorruptError,
        ArtifactError,
        ArtifactStore,
        Component,
        Examples,
        Hyperparameters,
        InferenceResult,
        InfraBlessing,
        Model,
        ModelBlessing,
        ModelEvaluation,
        Node,
        Output,
        PipelineStopped,
        PushedModel,
        RunContext,
        Schema,
        Statistics,
        TransformGraph,
        component,
        load_artifact,
    )
    from jaxtx.core.settings import Settings
    from jaxtx.pipelines import (
        Pipeline,
        PipelineError,
        PipelineRun,
        PipelineRunError,
        run_pipeline,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxtx' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
