"""Log a jaxtx export as an MLflow model (``mlflow.pyfunc``).

``mlflow.pyfunc.load_model(uri).predict(pandas_dataframe)`` then works with a
signature and an input example. Loading needs ``jaxtx`` installed (for
``jaxtx.core.model_format``), not the training code or the user's module.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

__all__ = ["JaxtxPyfuncModel", "log_jaxtx_model", "pip_requirements"]

#: What the logged pyfunc model imports, pinned to the installed versions.
_REQUIREMENTS = ("jaxtx", "mlflow", "cloudpickle", "jax", "jaxlib", "numpy", "pandas", "pyarrow")


def pip_requirements() -> list[str]:
    """The logged model's requirements, ``name==installed version`` of each package it loads.

    Given to MLflow explicitly: MLflow would otherwise infer them by loading the
    model in a subprocess (seconds per logged model), and its guess misses jax.
    """
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in _REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:  # pragma: no cover - e.g. jaxtx run from a source tree
            continue
    return out


class JaxtxPyfuncModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper over ``jaxtx.core.model_format.LoadedModel``.

    ``predict`` takes a DataFrame holding the model's inputs as columns (other
    columns are ignored), any number of rows (predicted in chunks of the
    model's ``max_batch_size``; no server request limit applies), and converts it with
    :func:`jaxtx.core.model_format.to_model_inputs`, like every other path.
    """

    def load_context(self, context: Any) -> None:
        self._model = _load(context.artifacts["model_dir"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        """Predict every row of ``model_input``, in chunks of the model's largest batch.

        Args:
            context: MLflow's context (unused).
            model_input: The inputs as columns, any number of rows.
            params: MLflow's inference parameters (unused).

        Returns:
            One column per output (``name_j`` for column ``j`` of a wider
            output), indexed like ``model_input``.
        """
        model = self._model
        step = model.max_batch_size
        if not isinstance(model_input, pd.DataFrame) or len(model_input) <= step:
            out = model.predict(model_input)
        else:
            parts = [
                model.predict(model_input.iloc[i : i + step])
                for i in range(0, len(model_input), step)
            ]
            out = {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in parts[0]}
        cols = {}
        for name, value in out.items():
            arr = np.asarray(value)
            if arr.ndim == 1:
                cols[name] = arr
            else:
                for j in range(arr.shape[1]):
                    cols[f"{name}_{j}"] = arr[:, j]
        return pd.DataFrame(cols, index=model_input.index)


def _load(model_dir: str | Path) -> Any:
    """The export at ``model_dir``, with the model format's own largest batch per call."""
    from jaxtx.core.model_format import LoadedModel

    return LoadedModel.load(str(model_dir))


def _input_schema(example: pd.DataFrame) -> Any:
    """The input schema of ``example``'s columns, built directly: MLflow's
    inference warns on every integer column that a missing value would not
    fit, which a user of the logged model cannot act on (the model takes
    floats; jaxtx converts)."""
    from mlflow.types import ColSpec, DataType, Schema

    def kind(col: pd.Series) -> DataType:
        if pd.api.types.is_bool_dtype(col):
            return DataType.boolean
        if pd.api.types.is_integer_dtype(col):
            return DataType.long if col.dtype.itemsize > 4 else DataType.integer
        if pd.api.types.is_float_dtype(col):
            return DataType.double if col.dtype.itemsize > 4 else DataType.float
        return DataType.string

    return Schema(
        [
            ColSpec(kind(example[c]), str(c), required=not bool(example[c].isna().any()))
            for c in example.columns
        ]
    )


def log_jaxtx_model(
    *,
    tracking_uri: str,
    run_id: str,
    model_dir: str | Path,
    input_example: pd.DataFrame,
    name: str = "model",
) -> str:
    """Log ``model_dir`` as an MLflow pyfunc model of run ``run_id``; returns its
    ``models:/<model_id>`` URI.

    Uses a client for ``tracking_uri`` only: no active run and no change to
    MLflow's process-wide tracking URI, so component threads of other
    pipelines in this process are unaffected.

    Args:
      tracking_uri: the MLflow tracking URI of the run.
      run_id: the run that produced the model.
      model_dir: the jaxtx export to wrap.
      input_example: a few raw input rows (for the signature and example).
      name: the logged model's name.

    Returns:
      The logged model's URI, e.g. ``models:/m-0123...``.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model as MlflowModel
    from mlflow.models import ModelSignature, infer_signature

    from jaxtx.core.quiet import quiet_env, quiet_logger
    from jaxtx.core.tracking import MLFLOW_LOCK, mlflow_client

    output = JaxtxPyfuncModel()
    output._model = _load(model_dir)
    example_out = output.predict(None, input_example)
    signature = ModelSignature(_input_schema(input_example), infer_signature(example_out).inputs)
    client = mlflow_client(tracking_uri)
    with MLFLOW_LOCK:
        experiment_id = client.get_run(run_id).info.experiment_id
        logged = client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, model_type="jaxtx"
        )
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    with tempfile.TemporaryDirectory(prefix="jaxtx-mlflow-model-") as tmp:
        local = Path(tmp) / "model"
        meta = MlflowModel(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=run_id,
            model_id=logged.model_id,
        )
        # The wrapper is a small class in an installed package: MLflow's notice
        # about pickling arbitrary Python objects is not actionable here.
        # Its progress bar for copying the model's files is noise in a pipeline's log.
        with (
            quiet_logger(
                "mlflow.pyfunc",
                "Passing a Python object as `python_model`",
                "Validating input example",
            ),
            quiet_env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"),
        ):
            mlflow.pyfunc.save_model(
                path=str(local),
                python_model=JaxtxPyfuncModel(),
                artifacts={"model_dir": str(model_dir)},
                signature=signature,
                input_example=input_example,
                mlflow_model=meta,
                pip_requirements=pip_requirements(),
            )
        with MLFLOW_LOCK:
            client.log_model_artifacts(logged.model_id, str(local))
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return f"models:/{logged.model_id}"
