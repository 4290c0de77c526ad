"""jaxtx.components: artifacts, the ``@component`` decorator and the built-in components.

    from jaxtx.components import ExampleGen, StatisticsGen, SchemaGen, Trainer

The built-in components are imported on first use, so ``import jaxtx.components``
loads neither Beam nor JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._artifacts import (
    Anomalies,
    Artifact,
    ArtifactCorruptError,
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactTypeError,
    Examples,
    Hyperparameters,
    InferenceResult,
    InfraBlessing,
    Model,
    ModelBlessing,
    ModelEvaluation,
    Output,
    PushedModel,
    Schema,
    Statistics,
    TransformGraph,
    artifact_type,
    load_artifact,
)
from ._component import (
    Component,
    ComponentError,
    ExecutionResult,
    Node,
    Outcome,
    OutputRef,
    PipelineStopped,
    RunContext,
    WiringError,
    begin_building,
    component,
    end_building,
)

#: Built-in component -> the module that defines it (imported on first use).
BUILTINS = {
    "ExampleGen": "jaxtx.components.example_gen",
    "StatisticsGen": "jaxtx.components.statistics_gen",
    "SchemaGen": "jaxtx.components.schema_gen",
    "ImportSchema": "jaxtx.components.schema_gen",
    "ExampleValidator": "jaxtx.components.example_validator",
    "Transform": "jaxtx.components.transform",
    "Trainer": "jaxtx.components.trainer",
    "Evaluator": "jaxtx.components.evaluator",
    "InfraValidator": "jaxtx.components.infra_validator",
    "Pusher": "jaxtx.components.pusher",
    "BulkInferrer": "jaxtx.components.bulk_inferrer",
    "Tuner": "jaxtx.components.tuner",
}

#: Every artifact type jaxtx defines (all registered by importing this package).
ARTIFACT_TYPES = (
    Anomalies,
    Examples,
    InferenceResult,
    InfraBlessing,
    Model,
    ModelBlessing,
    ModelEvaluation,
    PushedModel,
    Schema,
    Statistics,
    TransformGraph,
    Hyperparameters,
)

__all__ = [
    "ARTIFACT_TYPES",
    "BUILTINS",
    "Anomalies",
    "Artifact",
    "ArtifactCorruptError",
    "ArtifactError",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "ArtifactTypeError",
    "BulkInferrer",
    "Component",
    "ComponentError",
    "Evaluator",
    "ExampleGen",
    "ExampleValidator",
    "Examples",
    "ExecutionResult",
    "ImportSchema",
    "InferenceResult",
    "Hyperparameters",
    "InfraBlessing",
    "InfraValidator",
    "Model",
    "ModelBlessing",
    "ModelEvaluation",
    "Node",
    "Outcome",
    "Output",
    "OutputRef",
    "PipelineStopped",
    "PushedModel",
    "Pusher",
    "RunContext",
    "Schema",
    "SchemaGen",
    "Statistics",
    "StatisticsGen",
    "Trainer",
    "Transform",
    "TransformGraph",
    "Tuner",
    "WiringError",
    "artifact_type",
    "begin_building",
    "component",
    "end_building",
    "load_artifact",
]

if TYPE_CHECKING:
    from .bulk_inferrer import BulkInferrer
    from .evaluator import Evaluator
    from .example_gen import ExampleGen
    from .example_validator import ExampleValidator
    from .infra_validator import InfraValidator
    from .pusher import Pusher
    from .schema_gen import ImportSchema, SchemaGen
    from .statistics_gen import StatisticsGen
    from .trainer import Trainer
    from .transform import Transform


def __getattr__(name: str) -> Any:
    module = BUILTINS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxtx.components' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
