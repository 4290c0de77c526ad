"""jaxtx.pipelines: the Pipeline DSL, the Prefect runner and MLflow tracking."""

from ._env import apply_defaults

apply_defaults()

from ._pipeline import Pipeline, PipelineError  # noqa: E402
from ._runner import NodeRun, PipelineRun, PipelineRunError, run_pipeline  # noqa: E402

__all__ = [
    "NodeRun",
    "Pipeline",
    "PipelineError",
    "PipelineRun",
    "PipelineRunError",
    "run_pipeline",
]
