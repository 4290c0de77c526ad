"""InfraValidator: serve the candidate in a real server process and check its answers.

A wrapper over :func:`jaxtx.serving.infra_check.check_served_model`: starts
``python -m jaxtx.serving`` on the candidate (127.0.0.1, a free port, no
Docker), sends eval examples through the TF Serving REST API and compares the
answers with in-process predictions. Writes an InfraBlessing with every check.
"""

from __future__ import annotations

import json

from jaxtx.serving.infra_check import check_served_model, json_rows

from ._artifacts import Examples, InfraBlessing, Model, Output
from ._component import component

__all__ = ["InfraValidator"]


@component
def InfraValidator(
    model: Model,
    examples: Examples,
    infra_blessing: Output[InfraBlessing],
    *,
    split: str = "eval",
    num_examples: int = 64,
    timeout_s: float = 120.0,
    rtol: float = 1e-5,
) -> dict[str, float]:
    """Serve ``model`` in a subprocess and check predictions over REST.

    Args:
      model: the candidate.
      examples: raw examples (ExampleGen's output) to send.
      split: which split to take examples from.
      num_examples: how many rows to send (one request, row format).
      timeout_s: how long the server may take to become ready.
      rtol: relative tolerance between served and in-process predictions.
    """
    loaded = model.load()
    names = [s.name for s in loaded.signature.inputs]
    table = examples.read(split).slice(0, num_examples)
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ValueError(
            f"InfraValidator: examples {examples.uri} lack the model's inputs {missing}"
        )
    rows = json_rows(table, names)
    expected = loaded.predict({n: [r[n] for r in rows] for n in names})
    checks = check_served_model(
        model.model_dir,
        rows,
        expected,
        name=str(model.properties.get("name", "model")),
        log_path=infra_blessing.path / "server.log",
        timeout_s=timeout_s,
        rtol=rtol,
    )
    blessed = all(c["passed"] for c in checks)
    (infra_blessing.path / "infra_blessing.json").write_text(
        json.dumps({"blessed": blessed, "checks": checks}, indent=2)
    )
    infra_blessing.properties.update(blessed=blessed, num_examples=len(rows), model=model.uri)
    return {"blessed": float(blessed)}
