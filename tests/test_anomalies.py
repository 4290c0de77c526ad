"""Tests of jaxtx.validation.anomalies and anomalies_report: each anomaly type, drift, skew."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

# --------------------------------------------------------------------------- fixtures
from _stats_docs import make_stats, num_feature, str_feature

from jaxtx.validation.anomalies import (
    Anomaly,
    failing,
    jensen_shannon_divergence,
    l_infinity_distance,
    load_anomalies,
    malformed_rows,
    save_anomalies,
    validate_statistics,
)
from jaxtx.validation.anomalies_report import render_anomalies_html
from jaxtx.validation.schema import (
    ANOMALY_TYPES,
    Comparator,
    Domain,
    FeatureSchema,
    Presence,
    SchemaSpec,
    infer_schema,
)

N = 1000
WORKCLASS = ("Gov", "Private", "Self-emp")


def _workclass(rng: np.random.Generator, p: Sequence[float] = (0.1, 0.7, 0.2)) -> list[str]:
    return rng.choice(list(WORKCLASS), size=N, p=list(p)).tolist()


def _ages(rng: np.random.Generator) -> np.ndarray:
    ages = rng.integers(17, 91, size=N)
    ages[:2] = [17, 90]
    return ages


@pytest.fixture(scope="module")
def schema() -> SchemaSpec:
    return SchemaSpec(
        features=(
            FeatureSchema("age", "INT", Presence(0.98, 1), Domain(min=17, max=90)),
            FeatureSchema("income", "FLOAT", Presence(1.0, 1), Domain(min=0.0, max=500.0)),
            FeatureSchema("workclass", "STRING", Presence(1.0, 1), Domain(values=WORKCLASS)),
            FeatureSchema("flag", "BOOL", Presence(1.0, 1)),
        )
    )


def clean_stats(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return make_stats(
        age=num_feature(_ages(rng)),
        income=num_feature(rng.normal(100.0, 20.0, size=N), type_="FLOAT"),
        workclass=str_feature(_workclass(rng)),
        flag=num_feature(rng.integers(0, 2, size=N), type_="BOOL"),
    )


@pytest.fixture(scope="module")
def clean() -> dict[str, Any]:
    return clean_stats(0)


def _replace(stats: dict[str, Any], **features: dict[str, Any]) -> dict[str, Any]:
    out = dict(stats, features=dict(stats["features"]))
    out["features"].update(features)
    return out


def _only(anomalies: list[Anomaly], type_: str) -> Anomaly:
    matching = [a for a in anomalies if a.type == type_]
    assert len(matching) == 1, anomalies
    return matching[0]


def _types(anomalies: list[Anomaly]) -> list[str]:
    return sorted(a.type for a in anomalies)


# --------------------------------------------------------------------------- clean data


def test_clean_stats_have_no_anomalies(schema: SchemaSpec, clean: dict[str, Any]) -> None:
    assert validate_statistics(clean, schema, split="train") == []
    assert validate_statistics(clean_stats(1), schema, split="eval") == []


def test_inferred_schema_accepts_its_own_statistics(clean: dict[str, Any]) -> None:
    inferred = infer_schema({"train": clean})
    assert validate_statistics(clean, inferred, split="train") == []


#: TFDV's anomaly type names used here (tensorflow_metadata/proto/v0/anomalies.proto,
#: AnomalyInfo.Type).
_TFDV_TYPES = {
    "SCHEMA_MISSING_COLUMN",
    "SCHEMA_NEW_COLUMN",
    "UNEXPECTED_DATA_TYPE",
    "FEATURE_TYPE_LOW_FRACTION_PRESENT",
    "FEATURE_TYPE_LOW_NUMBER_PRESENT",
    "ENUM_TYPE_UNEXPECTED_STRING_VALUES",
    "FLOAT_TYPE_HAS_NAN",
    "FLOAT_TYPE_HAS_INF",
    "INT_TYPE_BIG_INT",
    "INT_TYPE_SMALL_INT",
    "FLOAT_TYPE_BIG_FLOAT",
    "FLOAT_TYPE_SMALL_FLOAT",
    "COMPARATOR_L_INFTY_HIGH",
    "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",
}


def test_anomaly_names_are_tfdvs() -> None:
    assert set(ANOMALY_TYPES) - _TFDV_TYPES == {"MALFORMED_ROWS"}  # the one jaxtx-only type
    assert set(ANOMALY_TYPES) >= _TFDV_TYPES


# --------------------------------------------------------------------------- columns and types


def test_missing_and_new_columns(schema: SchemaSpec, clean: dict[str, Any]) -> None:
    stats = _replace(clean, extra=num_feature(np.ones(N)))
    del stats["features"]["flag"]
    anomalies = validate_statistics(stats, schema, split="eval")
    assert _types(anomalies) == ["SCHEMA_MISSING_COLUMN", "SCHEMA_NEW_COLUMN"]

    missing = _only(anomalies, "SCHEMA_MISSING_COLUMN")
    assert (missing.feature, missing.severity, missing.split) == ("flag", "fail", "eval")
    assert "'flag'" in missing.description and "'eval'" in missing.description
    assert "BOOL" in missing.description

    new = _only(anomalies, "SCHEMA_NEW_COLUMN")
    assert (new.feature, new.severity) == ("extra", "warn")
    assert "'extra'" in new.description and "INT" in new.description


def test_new_columns_of_every_type_are_reported(schema: SchemaSpec, clean: dict[str, Any]) -> None:
    nested = {"type": "OTHER", "arrow_type": "list<item: int64>", "num_present": N}
    nested |= {"num_missing": 0, "num": None, "str": None, "sketches": {}}
    record = dict(nested, arrow_type="struct<a: int64, b: string>")
    anomalies = validate_statistics(_replace(clean, nested=nested, record=record), schema)
    assert [(a.feature, a.type) for a in anomalies] == [
        ("nested", "SCHEMA_NEW_COLUMN"),
        ("record", "SCHEMA_NEW_COLUMN"),
    ]
    assert "list<item: int64>" in anomalies[0].description
    assert "struct<a: int64, b: string>" in anomalies[1].description


def test_new_list_and_struct_columns_from_real_statistics() -> None:
    from jaxtx.validation.statistics import statistics_from_table

    table = pa.table(
        {
            "x": [1, 2, 3],
            "tags": pa.array([["a"], [], ["b", "c"]]),
            "point": pa.array([{"a": 1}, {"a": 2}, None]),
        }
    )
    schema = SchemaSpec(features=(FeatureSchema("x", "INT"),))
    anomalies = validate_statistics(statistics_from_table(table), schema)
    assert [(a.feature, a.type) for a in anomalies] == [
        ("tags", "SCHEMA_NEW_COLUMN"),
        ("point", "SCHEMA_NEW_COLUMN"),
    ]


def test_unexpected_data_type(schema: SchemaSpec, clean: dict[str, Any]) -> None:
    stats = _replace(clean, age=str_feature(["x"] * N))
    anomalies = validate_statistics(stats, schema, split="train")
    anomaly = _only(anomalies, "UNEXPECTED_DATA_TYPE")
    assert anomalies == [anomaly]  # no range/enum checks on mistyped data
    assert anomaly.feature == "age" and anomaly.severity == "fail"
    assert "expected INT values, found STRING" in anomaly.description
    assert "arrow type string" in anomaly.description
    assert anomaly.expected == "INT"


def test_compatible_types_are_accepted(clean: dict[str, Any]) -> None:
    schema = SchemaSpec(
        features=(
            FeatureSchema("i_as_float", "FLOAT"),
            FeatureSchema("b_as_int", "INT"),
            FeatureSchema("s_as_bytes", "BYTES"),
        )
    )
    stats = make_stats(
        i_as_float=num_feature([1, 2, 3]),
        b_as_int=num_feature([0, 1, 1], type_="BOOL"),
        s_as_bytes=str_feature(["a", "b", "c"]),
    )
    assert validate_statistics(stats, schema) == []
    wrong = SchemaSpec(features=(FeatureSchema("i_as_float", "STRING"),))
    assert "UNEXPECTED_DATA_TYPE" in _types(validate_statistics(stats, wrong))


# --------------------------------------------------------------------------- presence


def test_low_fraction_present(schema: SchemaSpec, clean: dict[str, Any]) -> None:
    rng = np.random.default_rng(3)
    stats = _replace(clean, age=num_feature(_ages(rng)[:950], missing=50))
    anomaly = _only(
        validate_statistics(stats, schema, split="eval"), "FEATURE_TYPE_LOW_FRACTION_PRESENT"
    )
    assert anomaly.severity == "warn"
    assert "950 of 1000 rows (95.0%)" in anomaly.description
    assert "minimum fraction 0.98" in anomaly.description
    assert "'age'" in anomaly.description and "'eval'" in anomaly.description
    # Above the minimum fraction: no anomaly.
    stats = _replace(clean, age=num_feature(_ages(rng)[:985], missing=15))
    assert validate_statistics(stats, schema) == []


def test_low_number_present(clean: dict[str, Any]) -> None:
    schema = SchemaSpec(features=(FeatureSchema("age", "INT", Presence(0.0, 10)),))
    stats = make_stats(age=num_feature([30, 40, 50], missing=997))
    anomaly = _only(validate_statistics(stats, schema), "FEATURE_TYPE_LOW_NUMBER_PRESENT")
    assert anomaly.severity == "fail"
    assert "3 of 1000 rows" in anomaly.description and "minimum count 10" in anomaly.description
    assert validate_statistics(make_stats(age=num_feature(np.arange(10))), schema) == []


# --------------------------------------------------------------------------- values


def test_nan_and_inf(schema: SchemaSpec, clean: dict[str, Any]) -> None:
    income = np.random.default_rng(4).normal(100.0, 20.0, size=N)
    income[:12] = np.nan
    income[12:14] = np.inf
    income[14] = -np.inf
    stats = _replace(clean, income=num_feature(income, type_="FLOAT"))
    anomalies = validate_statistics(stats, schema, split="train")
    assert _types(anomalies) == ["FLOAT_TYPE_HAS_INF", "FLOAT_TYPE_HAS_NAN"]
    nan = _only(anomalies, "FLOAT_TYPE_HAS_NAN")
    assert "12 of 1000 values (1.2%) are NaN" in nan.description
    inf = _only(anomalies, "FLOAT_TYPE_HAS_INF")
    assert "3 of 1000 values (0.3%) are infinite (2 +inf, 1 -inf)" in inf.description
    assert {a.severity for a in anomalies} == {"fail"}

    allowing = SchemaSpec(
        features=tuple(
            FeatureSchema(f.name, f.type, f.presence, f.domain, allow_nan=True, allow_inf=True)
            for f in schema.features
        )
    )
    assert validate_statistics(stats, allowing) == []


def test_int_out_of_range() -> None:
    # 200 values: the KLL sketch (k=200) is still exact, so counts are exact.
    schema = SchemaSpec(features=(FeatureSchema("age", "INT", domain=Domain(min=17, max=90)),))
    ages = np.random.default_rng(5).integers(17, 91, size=200)
    ages[10:13] = 127
    ages[13] = 3
    anomalies = validate_statistics(make_stats(age=num_feature(ages)), schema, split="eval")
    assert _types(anomalies) == ["INT_TYPE_BIG_INT", "INT_TYPE_SMALL_INT"]
    big = _only(anomalies, "INT_TYPE_BIG_INT")
    assert big.description == (
        "Feature 'age' in split 'eval': 3 of 200 values (1.5%) above the maximum 90: max found 127"
    )
    assert big.expected == "max 90" and big.found == "max 127, 3 values above"
    small = _only(anomalies, "INT_TYPE_SMALL_INT")
    assert "1 of 200 values (0.5%) below the minimum 17: min found 3" in small.description
    assert big.severity == small.severity == "fail"


def test_float_out_of_range(schema: SchemaSpec, clean: dict[str, Any]) -> None:
    income = np.random.default_rng(6).normal(100.0, 20.0, size=N)
    income[:5] = [-1.5, -2.0, 600.0, 700.0, 800.0]
    stats = _replace(clean, income=num_feature(income, type_="FLOAT"))
    anomalies = validate_statistics(stats, schema, split="train")
    assert _types(anomalies) == ["FLOAT_TYPE_BIG_FLOAT", "FLOAT_TYPE_SMALL_FLOAT"]
    # 1000 values: the sketch estimates the counts and says how precise they are.
    big = _only(anomalies, "FLOAT_TYPE_BIG_FLOAT")
    assert "'income' in split 'train': about " in big.description
    assert "of 1000 values" in big.description and "sketch error +-14)" in big.description
    assert "above the maximum 500: max found 800" in big.description
    small = _only(anomalies, "FLOAT_TYPE_SMALL_FLOAT")
    assert "below the minimum 0: min found -2" in small.description


def test_range_counts_are_approximate_for_large_data() -> None:
    schema = SchemaSpec(features=(FeatureSchema("x", "FLOAT", domain=Domain(max=1.0)),))
    x = np.random.default_rng(7).uniform(0.0, 2.0, size=100_000)
    anomaly = validate_statistics(make_stats(x=num_feature(x, type_="FLOAT")), schema)[0]
    assert anomaly.type == "FLOAT_TYPE_BIG_FLOAT"
    count = int(anomaly.description.split("about ")[1].split(" of")[0])
    error = int(anomaly.description.split("sketch error +-")[1].split(")")[0])
    assert error == 1330
    assert abs(count - int((x > 1.0).sum())) <= error


def test_one_sided_range() -> None:
    schema = SchemaSpec(features=(FeatureSchema("x", "INT", domain=Domain(min=0)),))
    assert validate_statistics(make_stats(x=num_feature([0, 5, 10**9])), schema) == []
    anomalies = validate_statistics(make_stats(x=num_feature([-1, 5])), schema)
    assert _types(anomalies) == ["INT_TYPE_SMALL_INT"]


def test_unexpected_enum_values_complete(schema: SchemaSpec, clean: dict[str, Any]) -> None:
    values = _workclass(np.random.default_rng(8))
    values[:20] = ["Without-pay"] * 20
    values[20:24] = ["<script>"] * 4
    stats = _replace(clean, workclass=str_feature(values))
    anomaly = _only(
        validate_statistics(stats, schema, split="eval"), "ENUM_TYPE_UNEXPECTED_STRING_VALUES"
    )
    assert anomaly.severity == "fail"
    assert (
        "2 distinct values outside the domain of 3 values, in 24 of 1000 values (2.4%): "
        "'Without-pay' (20), '<script>' (4)"
    ) in anomaly.description
    assert "partial" not in anomaly.description
    assert "'Gov'" in anomaly.expected and "'Without-pay' (20)" in anomaly.found


def test_unexpected_enum_values_partial_check() -> None:
    # 300 distinct values; counts are incomplete; two frequent outsiders.
    values = [f"v{i % 3}" for i in range(3000)] + ["bad"] * 400 + ["worse"] * 300
    values += [f"rare{i}" for i in range(300)]
    feature = str_feature(values, max_value_counts=50, top_k=5, frequent_lg_size=6)
    assert not feature["str"]["value_counts_complete"]
    schema = SchemaSpec(
        features=(FeatureSchema("s", "STRING", domain=Domain(values=("v0", "v1", "v2"))),)
    )
    anomaly = _only(
        validate_statistics(make_stats(s=feature), schema), "ENUM_TYPE_UNEXPECTED_STRING_VALUES"
    )
    assert "partial check" in anomaly.description
    assert "'bad'" in anomaly.description and "'worse'" in anomaly.description
    assert "at least" in anomaly.description

    # No outsider among the frequent values, but more distinct values than the domain.
    only_top = dict(feature, sketches={"hll": feature["sketches"]["hll"]})
    only_top["str"] = dict(
        feature["str"],
        top_k=[{"value": "v0", "count": 1000}],
        value_counts=[{"value": "v0", "count": 1000}],
    )
    anomaly = _only(
        validate_statistics(make_stats(s=only_top), schema), "ENUM_TYPE_UNEXPECTED_STRING_VALUES"
    )
    assert "partial check" in anomaly.description
    assert "none of them among the most frequent" in anomaly.description

    # Incomplete counts whose values all lie in the domain: nothing to report.
    inside = str_feature([f"v{i % 3}" for i in range(300)], max_value_counts=2)
    assert not inside["str"]["value_counts_complete"]
    assert validate_statistics(make_stats(s=inside), schema) == []


# --------------------------------------------------------------------------- distances


def test_distance_functions() -> None:
    assert jensen_shannon_divergence([1, 2, 3], [1, 2, 3]) == 0.0
    assert jensen_shannon_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert 0 < jensen_shannon_divergence([0.5, 0.5], [0.9, 0.1]) < 1
    assert l_infinity_distance({"a": 0.7, "b": 0.3}, {"a": 0.4, "b": 0.5, "c": 0.1}) == (
        pytest.approx(0.3),
        "a",
    )


def _with_comparators(
    schema: SchemaSpec, drift: Comparator | None, skew: Comparator | None = None
) -> SchemaSpec:
    return SchemaSpec(
        features=tuple(
            FeatureSchema(
                f.name,
                f.type,
                f.presence,
                None,
                drift_comparator=drift,
                skew_comparator=skew,
            )
            for f in schema.features
        )
    )


def shifted_stats(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return make_stats(
        age=num_feature(rng.integers(40, 114, size=N)),
        income=num_feature(rng.normal(130.0, 20.0, size=N), type_="FLOAT"),
        workclass=str_feature(_workclass(rng, p=(0.1, 0.4, 0.5))),
        flag=num_feature((rng.random(N) < 0.9).astype(int), type_="BOOL"),
    )


def test_drift_fires_for_shifted_distribution(schema: SchemaSpec, clean: dict[str, Any]) -> None:
    drifting = _with_comparators(schema, Comparator(threshold=0.1))
    previous = clean_stats(11)
    assert validate_statistics(clean, drifting, split="train", previous_stats=clean) == []
    assert validate_statistics(clean, drifting, split="train", previous_stats=previous) == []

    anomalies = validate_statistics(
        shifted_stats(12), drifting, split="train", previous_stats=previous
    )
    by_feature = {a.feature: a for a in anomalies}
    assert set(by_feature) == {"age", "income", "workclass", "flag"}
    for name in ("age", "income"):
        anomaly = by_feature[name]
        assert anomaly.type == "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH"
        assert "drift against the previous span" in anomaly.description
        assert "exceeds the threshold 0.1" in anomaly.description
        assert anomaly.severity == "warn"
        assert float(anomaly.found.split()[-1]) > 0.1
    workclass = by_feature["workclass"]
    assert workclass.type == "COMPARATOR_L_INFTY_HIGH"
    assert "L-infinity distance 0.3" in workclass.description
    # Private 70% -> 40% and Self-emp 20% -> 50% move about as much.
    assert "'Private'" in workclass.description or "'Self-emp'" in workclass.description
    assert "% in the previous span" in workclass.description
    assert by_feature["flag"].type == "COMPARATOR_L_INFTY_HIGH"
    flag = by_feature["flag"].description
    assert "L-infinity distance 0.4" in flag and ("'true'" in flag or "'false'" in flag)


def test_drift_threshold_controls_firing(schema: SchemaSpec) -> None:
    loose = _with_comparators(schema, Comparator(threshold=0.99))
    assert validate_statistics(shifted_stats(1), loose, previous_stats=clean_stats(2)) == []
    off = _with_comparators(schema, None)
    assert validate_statistics(shifted_stats(1), off, previous_stats=clean_stats(2)) == []


def test_skew_fires_against_serving_data(schema: SchemaSpec, clean: dict[str, Any]) -> None:
    skewing = _with_comparators(schema, None, Comparator(threshold=0.1, severity="fail"))
    same = validate_statistics(clean, skewing, split="train", serving_stats=clean_stats(21))
    assert same == []
    anomalies = validate_statistics(clean, skewing, split="train", serving_stats=shifted_stats(22))
    assert {a.feature for a in anomalies} == {"age", "income", "workclass", "flag"}
    for anomaly in anomalies:
        assert "skew against serving data" in anomaly.description
        assert "drift" not in anomaly.description
        assert anomaly.severity == "fail"  # the comparator's own severity
    # Drift comparators do not run on serving data and vice versa.
    drift_only = _with_comparators(schema, Comparator(threshold=0.1))
    assert validate_statistics(clean, drift_only, serving_stats=shifted_stats(22)) == []


def test_categorical_drift_with_incomplete_value_counts() -> None:
    base = [f"v{i}" for i in range(10)]
    rare = [f"rare{i}" for i in range(2000)]

    def feature(p: Sequence[float], seed: int) -> dict[str, Any]:
        values = np.random.default_rng(seed).choice(base, size=20_000, p=list(p)).tolist()
        return str_feature(values + rare, max_value_counts=100)

    uniform = [0.1] * 10
    skewed = [0.4] + [0.6 / 9] * 9
    a, b, c = feature(uniform, 1), feature(uniform, 2), feature(skewed, 3)
    assert not a["str"]["value_counts_complete"]
    schema = SchemaSpec(features=(FeatureSchema("s", "STRING", drift_comparator=Comparator(0.05)),))
    assert validate_statistics(make_stats(s=b), schema, previous_stats=make_stats(s=a)) == []
    anomaly = _only(
        validate_statistics(make_stats(s=c), schema, previous_stats=make_stats(s=a)),
        "COMPARATOR_L_INFTY_HIGH",
    )
    assert "'v0'" in anomaly.description
    distance = float(anomaly.found.split()[2])
    assert distance == pytest.approx((0.4 - 0.1) * 20_000 / 22_000, abs=0.03)


def test_numeric_drift_from_quantiles_without_sketches(schema: SchemaSpec) -> None:
    def strip(stats: dict[str, Any]) -> dict[str, Any]:
        income = dict(stats["features"]["income"], sketches={})
        return dict(stats, features={"income": income})

    drifting = SchemaSpec(
        features=(FeatureSchema("income", "FLOAT", drift_comparator=Comparator(0.1)),)
    )
    previous = strip(clean_stats(41))
    assert validate_statistics(strip(clean_stats(42)), drifting, previous_stats=previous) == []
    anomaly = _only(
        validate_statistics(strip(shifted_stats(43)), drifting, previous_stats=previous),
        "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",
    )
    assert anomaly.feature == "income"


def test_comparison_skipped_when_reference_lacks_feature(schema: SchemaSpec) -> None:
    drifting = _with_comparators(schema, Comparator(threshold=0.0))
    previous = make_stats(other=num_feature(np.arange(N)))
    assert validate_statistics(clean_stats(1), drifting, previous_stats=previous) == []


# --------------------------------------------------------------------------- severities


def test_severity_overrides(schema: SchemaSpec, clean: dict[str, Any]) -> None:
    ages = _ages(np.random.default_rng(50))
    ages[0] = 127
    stats = _replace(clean, age=num_feature(ages), extra=num_feature(np.ones(N)))
    base = validate_statistics(stats, schema)
    assert {a.type: a.severity for a in base} == {
        "INT_TYPE_BIG_INT": "fail",
        "SCHEMA_NEW_COLUMN": "warn",
    }
    assert [a.type for a in failing(base)] == ["INT_TYPE_BIG_INT"]

    features = list(schema.features)
    age = features[0]
    features[0] = FeatureSchema(
        age.name, age.type, age.presence, age.domain, severity={"INT_TYPE_BIG_INT": "warn"}
    )
    overridden = SchemaSpec(
        features=tuple(features),
        default_severities={"SCHEMA_NEW_COLUMN": "fail", "INT_TYPE_BIG_INT": "fail"},
    )
    anomalies = validate_statistics(stats, overridden)
    assert {a.type: a.severity for a in anomalies} == {
        "INT_TYPE_BIG_INT": "warn",  # per feature beats schema-wide
        "SCHEMA_NEW_COLUMN": "fail",  # schema-wide beats built-in
    }
    assert [a.type for a in failing(anomalies)] == ["SCHEMA_NEW_COLUMN"]


def test_comparator_severity_beats_feature_override(clean: dict[str, Any]) -> None:
    schema = SchemaSpec(
        features=(
            FeatureSchema(
                "workclass",
                "STRING",
                drift_comparator=Comparator(0.1),
                skew_comparator=Comparator(0.1, severity="warn"),
                severity={"COMPARATOR_L_INFTY_HIGH": "fail"},
            ),
        )
    )
    other = shifted_stats(60)
    stats = {
        "format": "jaxtx.statistics/1",
        "num_rows": N,
        "features": {"workclass": clean["features"]["workclass"]},
    }
    anomalies = validate_statistics(stats, schema, previous_stats=other, serving_stats=other)
    severities = {("drift" in a.description): a.severity for a in anomalies}
    assert severities == {True: "fail", False: "warn"}


# --------------------------------------------------------------------------- files and report


def test_save_load_anomalies(schema: SchemaSpec, clean: dict[str, Any], tmp_path: Path) -> None:
    stats = _replace(clean, extra=num_feature(np.ones(N)))
    del stats["features"]["age"]
    anomalies = validate_statistics(stats, schema, split="eval")
    path = tmp_path / "anomalies.json"
    save_anomalies(anomalies, path)
    data = json.loads(path.read_text())
    assert [set(d) for d in data] == [
        {"split", "feature", "type", "severity", "description", "expected", "found"}
    ] * 2
    assert load_anomalies(path) == anomalies
    save_anomalies([], path)
    assert load_anomalies(path) == []

    path.write_text(json.dumps([{"feature": "x"}]))
    with pytest.raises(ValueError, match="entry 0: expected keys"):
        load_anomalies(path)
    bad = dict(data[0], severity="loud")
    path.write_text(json.dumps([bad]))
    with pytest.raises(ValueError, match="severity"):
        load_anomalies(path)


def test_html_report(schema: SchemaSpec) -> None:
    anomalies = [
        Anomaly("a<b>", "SCHEMA_NEW_COLUMN", "warn", "new & <odd> column", "none", "INT", "eval"),
        Anomaly(
            "age", "INT_TYPE_BIG_INT", "fail", "Feature 'age': 3 > 90", "max 90", "max 127", "eval"
        ),
    ]
    page = render_anomalies_html(anomalies, title="Anomalies <eval>", schema=schema)
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Anomalies &lt;eval&gt;</title>" in page
    assert "a&lt;b&gt;" in page and "new &amp; &lt;odd&gt; column" in page
    assert "<odd>" not in page and "<b>" not in page
    assert "Feature &#x27;age&#x27;: 3 &gt; 90" in page
    # Failures come first and are highlighted.
    assert page.index('<tr class="fail">') < page.index('<tr class="warn">')
    assert "1 fail" in page and "1 warn" in page
    assert "range [17, 90]" in page  # schema column
    assert "not in schema" in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")

    empty = render_anomalies_html([], title="Clean")
    assert "No anomalies" in empty and "<table" not in empty


# --------------------------------------------------------------------------- integration


def test_with_statistics_from_table() -> None:
    statistics = pytest.importorskip("jaxtx.validation.statistics")
    rng = np.random.default_rng(70)
    n = 2000
    train = pa.table(
        {
            "age": pa.array(rng.integers(17, 91, size=n)),
            "income": pa.array(rng.normal(100.0, 20.0, size=n)),
            "workclass": pa.array(rng.choice(list(WORKCLASS), size=n).tolist()),
        }
    )
    income = rng.normal(160.0, 20.0, size=n)
    income[:5] = math.nan
    serving = pa.table(
        {
            "age": pa.array(np.append(rng.integers(17, 91, size=n - 1), 150)),
            "income": pa.array(income),
            "workclass": pa.array(["Unknown"] + rng.choice(list(WORKCLASS), size=n - 1).tolist()),
            "zip": pa.array(["x"] * n),
        }
    )
    train_stats = statistics.statistics_from_table(train)
    serving_stats = statistics.statistics_from_table(serving)
    inferred = infer_schema({"train": train_stats}, infer_ranges=True)
    assert validate_statistics(train_stats, inferred, split="train") == []

    curated = SchemaSpec(
        features=tuple(
            FeatureSchema(
                f.name,
                f.type,
                f.presence,
                Domain(max=500.0) if f.name == "income" else f.domain,
                skew_comparator=Comparator(0.1),
            )
            for f in inferred.features
        )
    )
    assert inferred.feature("income").type == "FLOAT"
    anomalies = validate_statistics(serving_stats, curated, split="serving")
    assert _types(anomalies) == [
        "ENUM_TYPE_UNEXPECTED_STRING_VALUES",
        "FLOAT_TYPE_HAS_NAN",
        "INT_TYPE_BIG_INT",
        "SCHEMA_NEW_COLUMN",
    ]
    skew = validate_statistics(train_stats, curated, split="train", serving_stats=serving_stats)
    assert [(a.feature, a.type) for a in skew] == [
        ("income", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH")
    ]
    big = _only(anomalies, "INT_TYPE_BIG_INT")
    # 2000 values: the quantile summary is exact, so is the count
    assert "'age' in split 'serving': 1 of 2000 values (0.05%) above" in big.description
    assert big.description.endswith("above the maximum 90: max found 150")
    assert "5 of 2000 values" in _only(anomalies, "FLOAT_TYPE_HAS_NAN").description
    assert "'Unknown' (1)" in _only(anomalies, "ENUM_TYPE_UNEXPECTED_STRING_VALUES").description
    assert _only(anomalies, "SCHEMA_NEW_COLUMN").feature == "zip"


# --------------------------------------------------------------------------- environments


def test_serving_environment_without_the_label(clean: dict[str, Any]) -> None:
    schema = SchemaSpec(
        features=(
            FeatureSchema("age", "INT"),
            FeatureSchema("label", "INT", Presence(1.0, 1), not_in_environment=("SERVING",)),
        ),
        default_environment=("TRAINING", "SERVING"),
    )
    stats = make_stats(age=num_feature([30, 40, 50]))
    assert _types(validate_statistics(stats, schema)) == ["SCHEMA_MISSING_COLUMN"]
    assert validate_statistics(stats, schema, environment="SERVING") == []
    with_label = make_stats(age=num_feature([30, 40]), label=num_feature([0, 1]))
    assert validate_statistics(with_label, schema, environment="SERVING") == []  # not new
    assert _types(validate_statistics(stats, schema, environment="TRAINING")) == [
        "SCHEMA_MISSING_COLUMN"
    ]


# --------------------------------------------------------------------------- exact counts


def test_out_of_range_counts_are_exact_when_values_are_given() -> None:
    rng = np.random.default_rng(5)
    values = np.append(rng.integers(0, 100, size=333), -3)
    table = pa.table({"x": values})
    from jaxtx.validation.statistics import statistics_from_table

    stats = statistics_from_table(table)
    schema = SchemaSpec(features=(FeatureSchema("x", "INT", domain=Domain(min=0, max=1000)),))
    exact = _only(
        validate_statistics(stats, schema, values=lambda name: table.column(name)),
        "INT_TYPE_SMALL_INT",
    )
    assert "1 of 334 values (0.3%) below the minimum 0" in exact.description
    assert "about" not in exact.description
    # Below the exact-quantile limit the statistics alone count exactly too.
    from_stats = _only(validate_statistics(stats, schema), "INT_TYPE_SMALL_INT")
    assert "1 of 334 values (0.3%) below the minimum 0" in from_stats.description
    assert "about" not in from_stats.description


def test_malformed_rows_threshold_and_override() -> None:
    rejected = [{"source": "f.csv", "line": 7, "reason": "expected 3 fields, found 2"}]
    assert malformed_rows(100, 0) is None
    warn = malformed_rows(1000, 3, rejected)
    assert (warn.type, warn.severity, warn.feature) == ("MALFORMED_ROWS", "warn", "<rows>")
    assert "3 of 1000 rows" in warn.description and "f.csv:7" in warn.description
    assert malformed_rows(1000, 3, rejected, max_fraction=0.0).severity == "fail"
    relaxed = SchemaSpec(default_severities={"MALFORMED_ROWS": "warn"})
    assert malformed_rows(100, 50, rejected, schema=relaxed).severity == "warn"


# --------------------------------------------------------------------------- one verdict


def _verdict_key(anomalies: Sequence[Anomaly]) -> list[tuple[str, str, str, str, str]]:
    return sorted((a.feature, a.type, a.severity, a.expected, a.found) for a in anomalies)


def test_validate_file_and_pipeline_give_the_same_anomalies(tmp_path: Path, store) -> None:
    from jaxtx.components.example_gen import ExampleGen
    from jaxtx.components.example_validator import ExampleValidator
    from jaxtx.components.schema_gen import ImportSchema
    from jaxtx.components.statistics_gen import StatisticsGen
    from jaxtx.validation.validate_file import validate_file

    rng = np.random.default_rng(11)
    lines = ["age,workclass,hours,extra"]
    for i in range(334):
        age = -3 if i == 100 else int(rng.integers(17, 91))
        work = "Unknown" if i == 7 else WORKCLASS[i % 3]
        lines.append(f"{age},{work},{int(rng.integers(1, 80))},{i}")
    lines.insert(50, "41,Private")  # malformed: 2 fields
    data = tmp_path / "data.csv"
    data.write_text("\n".join(lines) + "\n")
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(
        "default_severities: {INT_TYPE_SMALL_INT: warn, ENUM_TYPE_UNEXPECTED_STRING_VALUES: warn}\n"
        "features:\n"
        "  age: {type: INT, domain: {min: 0, max: 120}}\n"
        "  workclass: {type: STRING, domain: {values: [Gov, Private, Self-emp]}}\n"
        "  hours: {type: INT, presence: {min_fraction: 1.0, min_count: 1}}\n"
        "  label: {type: INT, presence: {min_count: 1}, not_in_environment: [SERVING]}\n"
    )

    from_cli, _ = validate_file(str(data), str(schema_file), environment="SERVING")

    examples = ExampleGen(
        input_pattern=str(data), split_names=["data"], split_ratios=[1], store=store
    )
    stats = StatisticsGen(examples=examples, store=store)
    schema = ImportSchema(schema_file=str(schema_file), store=store)
    validated = ExampleValidator(
        statistics=stats, schema=schema, examples=examples, environment="SERVING", store=store
    )
    from_pipeline = [Anomaly(**a) for a in validated.anomalies()]

    assert _verdict_key(from_pipeline) == _verdict_key(from_cli)
    assert sorted(a.type for a in from_cli) == [
        "ENUM_TYPE_UNEXPECTED_STRING_VALUES",
        "INT_TYPE_SMALL_INT",
        "MALFORMED_ROWS",
        "SCHEMA_NEW_COLUMN",
    ]
    small = _only(from_cli, "INT_TYPE_SMALL_INT")
    assert small.found == "min -3, 1 value below"  # exact, not "about"
    assert _only(from_cli, "MALFORMED_ROWS").severity == "warn"  # 1 of 335 rows < 1%


def test_validate_cli_reads_a_dialect_as_example_gen_does(
    tmp_path: Path, store, capsys: pytest.CaptureFixture[str]
) -> None:
    # A headerless, ';'-delimited latin-1 file with NA for missing values, not .csv.
    from jaxtx.components.example_gen import ExampleGen
    from jaxtx.components.example_validator import ExampleValidator
    from jaxtx.components.schema_gen import ImportSchema
    from jaxtx.components.statistics_gen import StatisticsGen
    from jaxtx.pipelines.cli import main

    rng = np.random.default_rng(5)
    towns = ("Zürich", "Orléans", "Málaga")
    lines = []
    for i in range(300):
        age = -1 if i == 40 else int(rng.integers(17, 91))
        town = "Köln" if i == 9 else towns[i % 3]
        hours = "NA" if i % 50 == 7 else f"{rng.uniform(1, 80):.1f}"
        lines.append(f"{age};{town};{hours}")
    lines.insert(200, "x;Zürich;3.0")  # age not a number: quarantined when converted
    for at in (120, 60, 10):  # malformed: 2 fields (read after the conversion's rejects)
        lines.insert(at, "33;Zürich")
    data = tmp_path / "people.txt"
    data.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(
        "default_severities: {ENUM_TYPE_UNEXPECTED_STRING_VALUES: warn, INT_TYPE_SMALL_INT: "
        "warn, FEATURE_TYPE_LOW_FRACTION_PRESENT: warn, MALFORMED_ROWS: warn}\n"
        "features:\n"
        "  age: {type: INT, domain: {min: 0, max: 120}}\n"
        "  town: {type: STRING, domain: {values: [Zürich, Orléans, Málaga]}}\n"
        "  hours: {type: FLOAT, presence: {min_fraction: 1.0, min_count: 1}}\n",
        encoding="utf-8",
    )

    code = main(
        ["validate", str(data), "--schema", str(schema_file), "--format", "csv"]
        + ["--no-header", "--column-names", "age,town,hours", "--delimiter", ";"]
        + ["--null-values", "NA", "--encoding", "latin-1"]
    )
    out = capsys.readouterr().out
    printed = sorted(
        (severity.lower(), feature, type_)
        for severity, feature, type_, _ in (
            re.match(r"(\w+)\s+(\S+): (\w+): (.*)", line).groups()  # type: ignore[union-attr]
            for line in out.splitlines()
            if line.strip()
        )
    )

    examples = ExampleGen(
        input_pattern=str(data),
        input_format="csv",
        csv_header=False,
        column_names=["age", "town", "hours"],
        csv_delimiter=";",
        null_values=["NA"],
        encoding="latin-1",
        split_names=["data"],
        split_ratios=[1],
        store=store,
    )
    stats = StatisticsGen(examples=examples, store=store)
    schema = ImportSchema(schema_file=str(schema_file), store=store)
    validated = ExampleValidator(statistics=stats, schema=schema, examples=examples, store=store)
    from_pipeline = [Anomaly(**a) for a in validated.anomalies()]

    assert code == 0  # warnings only
    assert printed == sorted((a.severity, a.feature, a.type) for a in from_pipeline)
    assert sorted(a.type for a in from_pipeline) == [
        "ENUM_TYPE_UNEXPECTED_STRING_VALUES",
        "FEATURE_TYPE_LOW_FRACTION_PRESENT",
        "INT_TYPE_SMALL_INT",
        "MALFORMED_ROWS",
    ]
    assert "Köln" in _only(from_pipeline, "ENUM_TYPE_UNEXPECTED_STRING_VALUES").found
    malformed = _only(from_pipeline, "MALFORMED_ROWS").description
    assert "4 of 304 rows" in malformed and "people.txt:11:" in malformed
    assert f"WARN  <rows>: MALFORMED_ROWS: {malformed}" in out  # the same first rows, by line
    assert "Köln" in out and "min found -1" in out
    # A bad flag value is a usage error naming what is allowed.
    assert main(["validate", str(data), "--schema", str(schema_file), "--delimiter", ";;"]) == 2
    assert "delimiter must be one character" in capsys.readouterr().err


def test_default_inference_raises_no_false_alarm_on_a_later_span() -> None:
    from jaxtx.validation.statistics import statistics_from_table

    rng = np.random.default_rng(21)
    train = pa.table(
        {
            "age": rng.integers(17, 80, size=2000),
            "note": pa.array([None if i % 25 == 0 else "x" for i in range(2000)]),
            "country": [f"c{i % 30}" for i in range(2000)],
        }
    )
    later = pa.table(
        {
            "age": np.append(rng.integers(17, 80, size=999), 95),  # above the training max
            "note": pa.array([None if i % 10 == 0 else "x" for i in range(1000)]),  # fewer
            "country": [f"c{i % 30}" for i in range(1000)],
        }
    )
    schema = infer_schema({"train": statistics_from_table(train)})
    assert schema.feature("country").domain is not None  # 30 values: a TFDV-sized domain
    assert validate_statistics(statistics_from_table(later), schema) == []

    strict = infer_schema(
        {"train": statistics_from_table(train)}, infer_ranges=True, infer_min_fraction=True
    )
    assert sorted(_types(validate_statistics(statistics_from_table(later), strict))) == [
        "FEATURE_TYPE_LOW_FRACTION_PRESENT",
        "INT_TYPE_BIG_INT",
    ]
