"""The MLflow pyfunc wrapper predicts any number of rows (chunked inside, no server limits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from _serving_models import VOCAB, expected_outputs, write_logistic_model


def test_pyfunc_predicts_more_rows_than_one_model_call(tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    from jaxtx.components._mlflow_model import log_jaxtx_model

    model_dir = write_logistic_model(tmp_path / "models" / "logistic", 1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("pyfunc", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp)
    rows = 20_000  # above the 8,192 rows of one model call (and of one server request)
    i = np.arange(rows)
    frame = pd.DataFrame(
        {
            "x1": (i % 97 / 10.0).astype(np.float32),
            "x2": (i % 13).astype(np.float32),
            "color": [[*VOCAB, "purple"][k % 4] for k in range(rows)],
        }
    )
    model_uri = log_jaxtx_model(
        tracking_uri=uri, run_id=run.info.run_id, model_dir=model_dir, input_example=frame[:3]
    )
    client.set_terminated(run.info.run_id)
    location = client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    loaded = mlflow.pyfunc.load_model(location)

    # One model call takes at most max_batch_size rows (LoadedModel raises above
    # it), so 20,000 rows predict only when the wrapper chunks them.
    assert loaded.unwrap_python_model()._model.max_batch_size < rows

    got = loaded.predict(frame)

    assert len(got) == rows
    assert list(got.index) == list(frame.index)
    want = expected_outputs(
        frame["x1"].tolist(), frame["x2"].tolist(), frame["color"].tolist(), version=1
    )
    for name, values in want.items():
        np.testing.assert_allclose(got[name].to_numpy(), values, rtol=1e-5, atol=1e-6)

    # Requirements are pinned to what is installed, jax included (MLflow's own
    # inference, which loads the model in a subprocess, left jax out).
    from importlib.metadata import version
    from urllib.parse import urlparse

    reqs = (Path(urlparse(location).path) / "requirements.txt").read_text().split()
    assert f"jax=={version('jax')}" in reqs and f"mlflow=={version('mlflow')}" in reqs
