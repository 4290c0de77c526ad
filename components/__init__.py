"""jaxtx.components: artifacts, the ``@component`` decorator and the built-in components."""

from ._artifacts import (
    Anomalies,
    Artifact,
    ArtifactCorruptError,
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactTypeError,
    Examples,
    Output,
    Schema,
    Statistics,
    load_artifact,
)
from ._component import (
    Component,
    ComponentError,
    Node,
    OutputRef,
    PipelineStopped,
    WiringError,
    component,
)

__all__ = [
    "Anomalies",
    "Artifact",
    "ArtifactCorruptError",
    "ArtifactError",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "ArtifactTypeError",
    "Component",
    "ComponentError",
    "Examples",
    "Node",
    "Output",
    "OutputRef",
    "PipelineStopped",
    "Schema",
    "Statistics",
    "WiringError",
    "component",
    "load_artifact",
]
