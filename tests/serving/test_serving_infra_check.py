"""The InfraValidator's library, on its own: a real server subprocess on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from jaxtx.core.model_format import LoadedModel
from jaxtx.serving.infra_check import check_served_model, json_rows


def test_json_rows_turns_nan_into_null():
    table = pa.table({"a": [1.0, float("nan")], "b": ["x", None], "c": [1, 2]})
    assert json_rows(table, ["a", "b"]) == [{"a": 1.0, "b": "x"}, {"a": None, "b": None}]


def test_served_answers_equal_in_process_and_a_wrong_expectation_fails(tmp_path, model_cache):
    model_dir = model_cache / "logistic" / "1"
    loaded = LoadedModel.load(str(model_dir))
    specs = loaded.signature.inputs
    rows = [{s.name: ("red" if s.dtype == "string" else float(i)) for s in specs} for i in range(4)]
    expected = loaded.predict({s.name: [r[s.name] for r in rows] for s in specs})
    checks = check_served_model(model_dir, rows, expected, log_path=tmp_path / "server.log")
    assert [c["check"] for c in checks] == ["ready", "predict", "answers"]
    assert all(c["passed"] for c in checks), checks

    wrong = {k: np.asarray(v) + 1.0 for k, v in expected.items()}
    checks = check_served_model(model_dir, rows, wrong, log_path=tmp_path / "server2.log")
    assert checks[-1]["check"] == "answers" and not checks[-1]["passed"]
    assert "row 0" in checks[-1]["detail"]
