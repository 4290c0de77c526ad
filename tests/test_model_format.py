"""jaxtx.core.model_format: string lookups, the writer's checks and the one input conversion."""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from jaxtx.core.model_format import (
    InputError,
    LoadedModel,
    ModelLoadError,
    StringLookup,
    read_signature,
    to_model_inputs,
    write_model,
)

sys.path.insert(0, str(Path(__file__).parent / "serving"))

from _serving_models import VOCAB, expected_outputs, write_logistic_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return LoadedModel.load(write_logistic_model(tmp_path_factory.mktemp("m") / "logistic", 1))


def test_string_lookup_vocabulary_hash_and_errors() -> None:
    vocab = StringLookup.from_json("c", {"kind": "vocabulary", "vocabulary": ["a", "b"]})
    crc = zlib.crc32(b"zz") % 1
    assert vocab.ids(["b", "a", "zz", None]).tolist() == [1, 0, 2 + crc, 2 + zlib.crc32(b"") % 1]
    hashed = StringLookup.from_json("h", {"kind": "hash", "num_buckets": 7, "default": "x"})
    assert hashed.ids(["q", None]).tolist() == [zlib.crc32(b"q") % 7, zlib.crc32(b"x") % 7]
    assert StringLookup.from_json("h", hashed.to_json()) == hashed
    strict = StringLookup(("a",), num_oov_buckets=0, default=None)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        strict.ids(["b"])
    with pytest.raises(ValueError, match="no 'default'"):
        strict.ids([None])
    with pytest.raises(ModelLoadError, match="kind 'bloom' is not supported"):
        StringLookup.from_json("c", {"kind": "bloom"})


def test_every_input_form_converts_the_same(model: LoadedModel) -> None:
    x1, x2, color = [0.5, None, 2.0], [1.0, 3.0, -1.0], ["red", None, "purple"]
    want = expected_outputs([0.5, float("nan"), 2.0], x2, color, 1)
    columns = {"x1": x1, "x2": x2, "color": color}
    table = pa.table({**columns, "label": [1, 0, 1]})
    frame = pd.DataFrame({"x1": x1, "x2": x2, "color": color, "label": [1, 0, 1]})
    rows = [
        {"x1": 0.5, "x2": 1.0, "color": "red"},
        {"x2": 3.0},  # absent keys are nulls
        {"x1": 2.0, "x2": -1.0, "color": "purple", "extra": "ignored"},
    ]
    for data in (columns, table, table.to_batches()[0], frame, rows):
        got = model.predict(data)
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
    prepared = to_model_inputs(frame, model)
    assert prepared["color"][0] == VOCAB.index("red") and np.isnan(prepared["x1"][1])


def test_conversion_errors_name_the_column(model: LoadedModel) -> None:
    with pytest.raises(InputError, match=r"'color'.*no such column.*did you mean 'colour'"):
        to_model_inputs(pa.table({"x1": [1.0], "x2": [1.0], "colour": ["red"]}), model)
    with pytest.raises(InputError, match=r"'x2'.*no such column.*did you mean 'x1'"):
        to_model_inputs([{"x1": 1.0, "color": "red"}], model)
    with pytest.raises(InputError, match=r"'x1'.*no such column; the columns are \['age'\]"):
        to_model_inputs(pd.DataFrame({"age": [1.0]}), model)
    with pytest.raises(InputError, match="a pyarrow Table or RecordBatch"):
        to_model_inputs("x1,x2,color", model)
    with pytest.raises(InputError, match="unknown feature 'colr'.*did you mean 'color'"):
        to_model_inputs({"x1": [1.0], "x2": [1.0], "colr": ["red"]}, model)


def test_write_model_checks_like_the_reader(model: LoadedModel, tmp_path: Path) -> None:
    sig = model.signature.to_json()
    with pytest.raises(ModelLoadError, match=r"string inputs \['color'\] have no vocabulary entry"):
        write_model(tmp_path / "bad", model.exported, sig, {})
    assert not (tmp_path / "bad").exists()
    pre = {"color": {"kind": "vocabulary", "vocabulary": VOCAB, "num_oov_buckets": 2}}
    write_model(tmp_path / "ok", model.exported, sig, pre)
    assert read_signature(tmp_path / "ok") == model.signature
    assert json.loads((tmp_path / "ok" / "preprocess.json").read_text())["color"]["default"] == ""
    again = LoadedModel.load(tmp_path / "ok")
    np.testing.assert_allclose(
        again.predict({"x1": [1.0], "x2": [2.0], "color": ["blue"]})["logits"],
        model.predict({"x1": [1.0], "x2": [2.0], "color": ["blue"]})["logits"],
    )
