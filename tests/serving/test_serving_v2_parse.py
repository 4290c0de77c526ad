"""v2 JSON request parsing: the plain-tensor fast path and the checked path agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jaxtx.serving.runtime import InputError, LoadedModel
from jaxtx.serving.v2 import parse_v2_infer


@pytest.fixture(scope="module")
def model(model_cache: Path) -> LoadedModel:
    return LoadedModel.load(str(model_cache / "logistic" / "1"), max_batch_size=4)


def _body(**override: dict[str, Any]) -> bytes:
    tensors = {
        "x1": {"name": "x1", "shape": [2], "datatype": "FP32", "data": [0.5, 1.5]},
        "x2": {"name": "x2", "shape": [2], "datatype": "FP32", "data": [2.0, 3.0]},
        "color": {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "mauve"]},
    }
    for name, tensor in override.items():
        tensors[name] = tensor
    return json.dumps({"inputs": list(tensors.values())}).encode()


def _arrays(model: LoadedModel, body: bytes) -> dict[str, list[Any]]:
    return {k: v.tolist() for k, v in parse_v2_infer(body, None, model).arrays.items()}


def test_plain_and_checked_forms_prepare_the_same_arrays(model: LoadedModel) -> None:
    plain = _arrays(model, _body())
    for variant in (
        {"x1": {"name": "x1", "shape": [2, 1], "datatype": "FP32", "data": [[0.5], [1.5]]}},
        {"x1": {"name": "x1", "shape": [2], "datatype": "FP32", "data": [[0.5], [1.5]]}},
        {
            "x1": {
                "name": "x1",
                "shape": [2],
                "datatype": "FP32",
                "data": [0.5, 1.5],
                "parameters": {},
            }
        },
        {"x2": {"name": "x2", "shape": [2], "datatype": "INT64", "data": [2, 3]}},
        {"x2": {"name": "x2", "shape": [2], "datatype": "FP64", "data": [2, 3.0]}},
    ):
        name = next(iter(variant))
        if variant[name]["shape"] == [2, 1]:
            with pytest.raises(InputError, match="x1"):  # x1 takes one value per row
                _arrays(model, _body(**variant))
            continue
        assert _arrays(model, _body(**variant)) == plain
    assert np.isclose(plain["x1"], [0.5, 1.5]).all()


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        ({"name": "x1", "shape": [2], "datatype": ["FP32"], "data": [1.0, 2.0]}, "x1.*datatype"),
        ({"name": "x1", "shape": [2], "datatype": "BYTES", "data": [1.0, 2.0]}, "x1.*FP32"),
        ({"name": "x1", "shape": [2], "datatype": "FP32", "data": [True, 2.0]}, "x1.*flat index 0"),
        ({"name": "x1", "shape": [2], "datatype": "FP32", "data": ["1", 2.0]}, "x1.*flat index 0"),
        ({"name": "x1", "shape": [2], "datatype": "FP32", "data": [1.0]}, "x1.*2 values"),
        ({"name": "x1", "shape": [True], "datatype": "FP32", "data": [1.0]}, "x1.*shape"),
        ({"name": "x1", "shape": [5], "datatype": "FP32", "data": [1.0] * 5}, "at most 4 rows"),
        ({"name": "x1", "shape": [2], "datatype": "INT32", "data": [1.5, 2]}, "x1.*whole numbers"),
        ({"name": "x1", "shape": [2], "datatype": "FP32", "data": None}, "x1"),
        ({"name": ["x1"], "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}, "name"),
    ],
)
def test_bad_tensors_are_named(model: LoadedModel, tensor: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_v2_infer(_body(x1=tensor), None, model)


def test_an_input_sent_twice_is_named(model: LoadedModel) -> None:
    body = json.loads(_body())
    body["inputs"].append(body["inputs"][0])
    with pytest.raises(InputError, match="x1.*each input once"):
        parse_v2_infer(json.dumps(body).encode(), None, model)
