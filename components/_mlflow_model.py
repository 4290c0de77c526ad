"""Log a jaxtx export as an MLflow model (``mlflow.pyfunc``).

``mlflow.pyfunc.load_model(uri).predict(pandas_dataframe)`` then works with a
signature and an input example. Loading needs ``jaxtx`` installed (for
``jaxtx.core.model_format``), not the training code or the user's module.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

__all__ = ["JaxtxPyfuncModel", "log_jaxtx_model", "use_tracking_uri"]

_LOCK = threading.Lock()


class JaxtxPyfuncModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper over ``jaxtx.core.model_format.LoadedModel``.

    ``predict`` takes a DataFrame holding the model's inputs as columns (other
    columns are ignored) and converts it with
    :func:`jaxtx.core.model_format.to_model_inputs`, like every other path.
    """

    def load_context(self, context: Any) -> None:
        self._model = _load(context.artifacts["model_dir"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        out = self._model.predict(model_input)
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
    from jaxtx.core.model_format import LoadedModel

    return LoadedModel.load(str(model_dir), max_batch_size=sys.maxsize)


def log_jaxtx_model(
    *,
    tracking_uri: str,
    run_id: str,
    model_dir: str | Path,
    input_example: pd.DataFrame,
    name: str = "model",
) -> str:
    """Log ``model_dir`` as an MLflow pyfunc model in run ``run_id``; returns its URI."""
    from mlflow.models import infer_signature

    output = JaxtxPyfuncModel()
    output._model = _load(model_dir)
    example_out = output.predict(None, input_example)
    signature = infer_signature(input_example, example_out)
    with _LOCK, use_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id, nested=True):
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=JaxtxPyfuncModel(),
            artifacts={"model_dir": str(model_dir)},
            signature=signature,
            input_example=input_example,
        )
    return str(info.model_uri)


@contextlib.contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Use ``uri`` for MLflow's fluent API, then put back the global URI *and*
    ``MLFLOW_TRACKING_URI`` (``mlflow.set_tracking_uri`` also sets the variable,
    which would silently redirect later pipelines of this process)."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    old_uri = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_uri)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
