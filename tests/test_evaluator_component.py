"""The Evaluator component eagerly, on a small export: fairness warnings for tiny groups,
gating on the large ones, and feature attributions in the report."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))

from _toy_model import toy_table, write_toy_model

from jaxtx import ArtifactStore
from jaxtx.components._artifacts import Examples, Model
from jaxtx.components.evaluator import Evaluator


def _artifacts(store: ArtifactStore, n: int = 1200) -> tuple[Model, Examples]:
    out = store.new_output(Model, "Test", "model")
    model = write_toy_model(out.path / "model", "binary_classification")
    out.properties["task"] = "binary_classification"
    table = toy_table(n, seed=7)
    race = np.where(np.arange(n) < 9, "tiny", np.where(np.arange(n) % 2 == 0, "a", "b"))
    labels = np.random.default_rng(8).binomial(1, model.predict(table)["probabilities"])
    table = table.append_column("race", pa.array(race)).append_column(
        "label", pa.array(labels.astype(np.int64))
    )
    ex = store.new_output(Examples, "Test", "examples")
    (ex.path / "data" / "eval").mkdir(parents=True)
    pq.write_table(table, ex.path / "data" / "eval" / "part-00000-of-00001.parquet")
    ex.properties["split_names"] = ["eval"]
    return store.commit(out), store.commit(ex)


def test_fairness_warnings_gate_and_attributions(store: ArtifactStore, caplog) -> None:
    model, examples = _artifacts(store)
    with caplog.at_level(logging.WARNING, logger="jaxtx.components.evaluator"):
        outputs = Evaluator(
            model=model,
            examples=examples,
            label="label",
            slicing_specs=[[], ["race"]],
            min_slice_size=30,
            sensitive_features=["race", "group"],
            thresholds=[
                {"metric": "fairness.demographic_parity_difference[race]@0.5", "upper": 0.2}
            ],
            num_bootstrap=30,
            feature_attributions=True,
            attribution_rows=400,
            store=store,
        )
    evaluation, blessing_artifact = outputs.evaluation, outputs.blessing
    root = Path(evaluation.uri)
    fairness = json.loads((root / "fairness.json").read_text())
    assert [a["name"] for a in fairness["analyses"]] == ["race", "group"]
    assert fairness["analyses"][0]["excluded_groups"] == ["race=tiny"]
    assert any("race=tiny (9 rows)" in w for w in fairness["warnings"])
    assert any("race=tiny (9 rows)" in r.getMessage() for r in caplog.records)
    assert evaluation.properties["fairness_warnings"] == fairness["warnings"]
    blessing = json.loads(Path(blessing_artifact.file("blessing.json")).read_text())
    assert blessing["blessed"] is True, blessing["checks"]

    attributions = json.loads((root / "attributions.json").read_text())
    assert attributions["num_rows"] == 400
    assert [s["name"] for s in attributions["slices"]] == ["overall", "race=a", "race=b"]
    methods = {f["name"]: f["method"] for f in attributions["features"]}
    assert methods["x1"] == "integrated_gradients" and methods["color"] == "occlusion"
    reports = root / "reports"
    assert (reports / "attributions.png").stat().st_size > 1000
    html = (reports / "evaluation.html").read_text()
    assert "Feature attributions" in html and "race=tiny (9 rows)" in html
