"""LoadedModel: loading, string lookup, strict input validation, load errors."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from _serving_models import VOCAB, expected_outputs

from jaxtx.serving.runtime import InputError, LoadedModel, ModelLoadError, StringLookup


@pytest.fixture(scope="module")
def logistic(model_cache: Path) -> LoadedModel:
    model = LoadedModel.load(model_cache / "logistic" / "1", max_batch_size=64)
    model.warmup([1, 4])
    return model


@pytest.fixture(scope="module")
def vector(model_cache: Path) -> LoadedModel:
    return LoadedModel.load(model_cache / "vector" / "1")


def test_load_reads_signature_and_version(logistic: LoadedModel) -> None:
    assert logistic.version == 1
    assert logistic.name == "logistic"
    assert logistic.signature.input_names == ["x1", "x2", "color"]
    assert logistic.signature.output_names == ["probabilities", "logits"]
    assert "cpu" in logistic.platforms


@pytest.mark.parametrize("rows", [1, 3, 5, 17])
def test_predict_matches_reference(logistic: LoadedModel, rows: int) -> None:
    rng = np.random.default_rng(rows)
    x1 = rng.normal(size=rows).astype(np.float32).tolist()
    x2 = rng.normal(size=rows).astype(np.float32).tolist()
    color = [["red", "green", "blue", "mauve", ""][i % 5] for i in range(rows)]
    out = logistic.predict({"x1": x1, "x2": x2, "color": color})
    want = expected_outputs(x1, x2, color, version=1)
    assert set(out) == {"probabilities", "logits"}
    for name in out:
        assert out[name].shape == (rows,)
        assert out[name].dtype == np.float32
        np.testing.assert_allclose(out[name], want[name], rtol=1e-5, atol=1e-6)


def test_numpy_inputs_and_ints_for_floats(logistic: LoadedModel) -> None:
    out = logistic.predict(
        {"x1": np.array([1, 2], np.int64), "x2": [3, 4], "color": np.array(["red", "blue"])}
    )
    want = expected_outputs([1, 2], [3, 4], ["red", "blue"], 1)
    np.testing.assert_allclose(out["logits"], want["logits"], rtol=1e-6)


def test_nan_and_null_allowed_for_floats(logistic: LoadedModel) -> None:
    out = logistic.predict({"x1": [float("nan"), None], "x2": [0.0, 0.0], "color": ["red"] * 2})
    assert np.isnan(out["logits"]).all()


def test_string_lookup_vocab_oov_and_default() -> None:
    lookup = StringLookup(vocabulary=("a", "b"), num_oov_buckets=3, default="b")
    assert lookup.id_of("a") == 0
    assert lookup.id_of("b") == 1
    assert lookup.id_of("zz") == 2 + zlib.crc32(b"zz") % 3
    assert lookup.id_of("é") == 2 + zlib.crc32("é".encode()) % 3
    assert StringLookup(vocabulary=("a",), num_oov_buckets=0).id_of("x") is None


def test_missing_string_takes_default(logistic: LoadedModel) -> None:
    got = logistic.predict({"x1": [0.0, 0.0], "x2": [0.0, 0.0], "color": [None, ""]})
    assert got["logits"][0] == got["logits"][1]
    oov = logistic.predict({"x1": [0.0], "x2": [0.0], "color": [{"b64": "bWF1dmU="}]})
    want = expected_outputs([0.0], [0.0], ["mauve"], 1)
    np.testing.assert_allclose(oov["logits"], want["logits"], rtol=1e-6)
    assert VOCAB[0] == "red"


def _error(model: LoadedModel, features: dict) -> InputError:
    with pytest.raises(InputError) as info:
        model.predict(features)
    return info.value


GOOD = {"x1": [1.0], "x2": [2.0], "color": ["red"]}


def test_missing_feature(logistic: LoadedModel) -> None:
    err = _error(logistic, {"x1": [1.0], "x2": [2.0]})
    assert err.field == "color"
    assert "missing" in err.found


def test_misspelt_feature_suggests_closest(logistic: LoadedModel) -> None:
    err = _error(logistic, {**GOOD, "colour": ["red"]})
    assert err.field == "colour"
    assert "did you mean 'color'?" in str(err)


@pytest.mark.parametrize(
    ("field", "value", "found"),
    [
        ("x1", ["abc"], "string"),
        ("x1", [True], "boolean"),
        ("x1", [{"a": 1}], "object"),
        ("x1", np.array(["1.0"]), "strings"),
        ("color", [3], "integer"),
        ("color", [1.5], "float"),
        ("x1", [[1.0, 2.0]], "shape [1, 2]"),
        ("x1", 1.0, "a single float"),
    ],
)
def test_wrong_type_or_shape_names_field(
    logistic: LoadedModel, field: str, value: object, found: str
) -> None:
    err = _error(logistic, {**GOOD, field: value})
    assert err.field == field
    assert found in err.found
    assert field in str(err)


def test_ragged_rows(logistic: LoadedModel) -> None:
    err = _error(logistic, {"x1": [[1.0, 2.0], [3.0]], "x2": [1.0, 2.0], "color": ["a", "b"]})
    assert err.field == "x1"
    assert "nested list" in err.found


def test_rows_disagree(logistic: LoadedModel) -> None:
    err = _error(logistic, {"x1": [1.0, 2.0], "x2": [1.0], "color": ["a", "b"]})
    assert err.field == "x2"
    assert "2 rows" in err.expected


def test_batch_too_large_and_empty(logistic: LoadedModel) -> None:
    n = logistic.max_batch_size + 1
    err = _error(logistic, {"x1": [0.0] * n, "x2": [0.0] * n, "color": ["red"] * n})
    assert err.field == "batch"
    err = _error(logistic, {"x1": [], "x2": [], "color": []})
    assert "at least one row" in err.expected


def test_int_bool_and_fixed_width_inputs(vector: LoadedModel) -> None:
    out = vector.predict(
        {"n": [1, 2.0], "vec": [[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], "flag": [True, 0]}
    )
    np.testing.assert_allclose(out["total"], [8.0, 3.5])
    bad = {
        "n": ([1.5], "float 1.5"),
        "vec": ([[1.0, 2.0]], "shape [1, 2]"),
        "flag": (["yes"], "string"),
    }
    good = {"n": [1], "vec": [[1.0, 2.0, 3.0]], "flag": [True]}
    for field, (value, found) in bad.items():
        err = _error(vector, {**good, field: value})
        assert err.field == field
        assert found in err.found
    for value in ([float("nan")], [None], [2**40], np.array([2**40])):
        err = _error(vector, {**good, "n": value})
        assert err.field == "n"
        assert "only float features accept" in str(err)


def _broken_copy(model_cache: Path, tmp_path: Path) -> Path:
    target = tmp_path / "logistic" / "1"
    shutil.copytree(model_cache / "logistic" / "1", target)
    return target


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: (d / "predict.jaxexport").write_bytes(b"garbage"), "not a jax.export"),
        (lambda d: (d / "signature.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "preprocess.json").unlink(), "no vocabulary entry"),
        (
            lambda d: (d / "signature.json").write_text(
                json.dumps(
                    {
                        "format": "jaxtx.model/1",
                        "inputs": [{"name": "x1", "dtype": "float32", "shape": [None]}],
                        "outputs": [{"name": "logits", "dtype": "float32", "shape": [None]}],
                    }
                )
            ),
            "takes features",
        ),
        (lambda d: (d / "signature.json").write_text('{"format": "other/1"}'), "not a jaxtx"),
    ],
)
def test_load_errors_say_what_is_wrong(
    model_cache: Path, tmp_path: Path, edit, message: str
) -> None:
    target = _broken_copy(model_cache, tmp_path)
    edit(target)
    with pytest.raises(ModelLoadError, match=message):
        LoadedModel.load(target)


def test_narrower_model_types_wide_outputs_and_extra_outputs(tmp_path: Path) -> None:
    """Signatures may name the client's type (int64) while the function takes int32;
    outputs may have more dimensions than the signature shows; extra outputs are dropped."""
    import jax
    import jax.numpy as jnp
    from jax import export

    def predict(f: dict[str, jax.Array]) -> dict[str, jax.Array]:
        k = f["k"].astype(jnp.float32)[:, None]
        probs = jax.nn.softmax(k * jnp.array([1.0, 2.0, 3.0]), axis=-1)
        return {"probabilities": probs, "debug": k[:, 0]}

    (b,) = export.symbolic_shape("b")
    blob = export.export(jax.jit(predict))({"k": jax.ShapeDtypeStruct((b,), jnp.int32)})
    target = tmp_path / "multi" / "1"
    target.mkdir(parents=True)
    (target / "predict.jaxexport").write_bytes(blob.serialize())
    (target / "signature.json").write_text(
        json.dumps(
            {
                "format": "jaxtx.model/1",
                "name": "multi",
                "task": "multiclass_classification",
                "inputs": [{"name": "k", "dtype": "int64", "shape": [None]}],
                "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [None]}],
            }
        )
    )
    model = LoadedModel.load(target)
    model.warmup()
    assert [(s.name, s.dtype, s.shape) for s in model.output_specs] == [
        ("probabilities", "float32", (None, 3))
    ]
    out = model.predict({"k": [0, 1]})
    assert set(out) == {"probabilities"}
    assert out["probabilities"].shape == (2, 3)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
    err = _error(model, {"k": [2**40]})  # fits int64, not the model's int32
    assert err.field == "k"
    assert "2147483647" in str(err)
