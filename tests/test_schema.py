"""Tests of jaxtx.validation.schema: inference, YAML/JSON files, validation of files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

# --------------------------------------------------------------------------- fixtures
from _stats_docs import make_stats, num_feature, str_feature

from jaxtx.validation.schema import (
    DEFAULT_SEVERITIES,
    Comparator,
    Domain,
    FeatureSchema,
    Presence,
    SchemaError,
    SchemaSpec,
    feature_in_environment,
    infer_schema,
    load_schema,
    save_schema,
    schema_from_dict,
    schema_to_dict,
)


@pytest.fixture(scope="module")
def train_stats() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = 1000
    ages = rng.integers(17, 91, size=n - 25)
    ages[:2] = [17, 90]
    workclass = rng.choice(["Private", "Self-emp", "Gov"], size=n, p=[0.7, 0.2, 0.1]).tolist()
    return make_stats(
        age=num_feature(ages, missing=25),
        income=num_feature(rng.normal(50.0, 10.0, size=n), type_="FLOAT"),
        workclass=str_feature(workclass),
        user_id=str_feature([f"u{i}" for i in range(n)]),
        flag=num_feature(rng.integers(0, 2, size=n), type_="BOOL"),
    )


# --------------------------------------------------------------------------- inference


def test_infer_schema_types_presence_and_domains(train_stats: dict[str, Any]) -> None:
    schema = infer_schema(train_stats)  # TFDV's defaults

    assert schema.names == ("age", "income", "workclass", "user_id", "flag")
    age = schema.feature("age")
    assert age.type == "INT"
    assert age.presence == Presence(min_fraction=0.0, min_count=1)  # optional: min_count only
    assert age.domain is None  # no ranges unless asked

    income = schema.feature("income")
    assert income.type == "FLOAT"
    assert income.presence == Presence(min_fraction=1.0, min_count=1)
    assert income.domain is None
    assert not income.allow_nan and not income.allow_inf

    workclass = schema.feature("workclass")
    assert workclass.domain == Domain(values=("Gov", "Private", "Self-emp"))
    assert schema.feature("user_id").domain is None  # 1000 distinct > max_domain_size
    assert schema.feature("flag").type == "BOOL"
    assert schema.feature("flag").domain is None

    for feature in schema.features:
        assert feature.drift_comparator is None
        assert feature.skew_comparator is None
        assert dict(feature.severity) == {}
    assert dict(schema.default_severities) == {}


def test_infer_schema_options_and_incomplete_value_counts(train_stats: dict[str, Any]) -> None:
    stats = make_stats(
        big=str_feature([f"v{i % 30}" for i in range(300)], max_value_counts=10),
        small=str_feature([f"v{i % 5}" for i in range(300)]),
    )
    schema = infer_schema(stats, max_domain_size=20)
    assert schema.feature("big").domain is None  # value counts incomplete
    assert schema.feature("small").domain == Domain(values=("v0", "v1", "v2", "v3", "v4"))
    assert infer_schema(stats, max_domain_size=4).feature("small").domain is None

    strict = infer_schema(train_stats, infer_ranges=True, infer_min_fraction=True)
    age = strict.feature("age")
    assert age.domain == Domain(min=17, max=90)
    assert isinstance(age.domain.min, int)
    assert age.presence == Presence(min_fraction=0.97, min_count=1)  # 975/1000 rounded down
    num = train_stats["features"]["income"]["num"]
    assert strict.feature("income").domain == Domain(min=num["min"], max=num["max"])
    assert strict.feature("workclass").domain is not None


def test_string_domains_follow_tfdv_threshold() -> None:
    stats = make_stats(
        hundred=str_feature([f"v{i % 100}" for i in range(1000)]),
        more=str_feature([f"v{i % 101}" for i in range(1000)]),
    )
    schema = infer_schema(stats)
    assert len(schema.feature("hundred").domain.values) == 100
    assert schema.feature("more").domain is None


def test_infer_schema_across_splits() -> None:
    train = make_stats(
        x=num_feature([1, 2, 3, 4]),
        s=str_feature(["a", "b", "a", "a"]),
        z=num_feature([1.0, np.nan, 2.0, 3.0], type_="FLOAT"),
    )
    eval_ = make_stats(
        x=num_feature([0.5, 9.5, 1.0], type_="FLOAT", missing=1),
        s=str_feature(["c", "a", "a", "b"]),
        z=num_feature([1.0, 2.0, np.inf, 0.0], type_="FLOAT"),
    )
    schema = infer_schema(
        {"train": train, "eval": eval_}, infer_ranges=True, infer_min_fraction=True
    )

    x = schema.feature("x")
    assert x.type == "FLOAT"  # INT in train, FLOAT in eval
    assert x.presence == Presence(min_fraction=0.75, min_count=1)
    assert x.domain == Domain(min=0.5, max=9.5)
    assert schema.feature("s").domain == Domain(values=("a", "b", "c"))
    z = schema.feature("z")
    assert z.allow_nan and z.allow_inf  # observed in some split


def test_infer_schema_feature_without_values() -> None:
    stats = make_stats(empty=num_feature([], type_="FLOAT", missing=10))
    feature = infer_schema(stats).feature("empty")
    assert feature.presence == Presence(min_fraction=0.0, min_count=0)
    assert feature.domain is None


def test_infer_schema_skips_other_type() -> None:
    stats = make_stats(x=num_feature([1, 2]))
    stats["features"]["nested"] = {
        "type": "OTHER",
        "arrow_type": "list<item: int64>",
        "num_present": 2,
        "num_missing": 0,
        "num": None,
        "str": None,
        "sketches": {},
    }
    assert infer_schema(stats).names == ("x",)


# --------------------------------------------------------------------------- lookup


def test_schema_lookup_and_severity_resolution() -> None:
    schema = SchemaSpec(
        features=(
            FeatureSchema(name="a", type="INT", severity={"INT_TYPE_BIG_INT": "warn"}),
            FeatureSchema(name="b", type="STRING"),
        ),
        default_severities={"SCHEMA_NEW_COLUMN": "fail", "INT_TYPE_BIG_INT": "fail"},
    )
    assert "a" in schema and "zz" not in schema
    assert schema.get("zz") is None
    assert schema.feature("b").type == "STRING"
    with pytest.raises(KeyError, match="zz"):
        schema.feature("zz")
    assert schema.severity("INT_TYPE_BIG_INT", "a") == "warn"  # feature override
    assert schema.severity("INT_TYPE_BIG_INT", "b") == "fail"  # schema-wide
    assert schema.severity("SCHEMA_NEW_COLUMN", "new") == "fail"
    assert schema.severity("FEATURE_TYPE_LOW_FRACTION_PRESENT", "a") == "warn"  # built-in
    assert DEFAULT_SEVERITIES["SCHEMA_MISSING_COLUMN"] == "fail"
    assert hash(schema) == hash(schema)


def test_constructors_reject_invalid_values() -> None:
    with pytest.raises(ValueError, match="type must be one of"):
        FeatureSchema(name="a", type="LONG")
    with pytest.raises(ValueError, match="'INT_TYPE_BIG_INT': 'error'"):
        FeatureSchema(name="a", type="INT", severity={"INT_TYPE_BIG_INT": "error"})
    with pytest.raises(ValueError, match="min 5 > max 1"):
        Domain(min=5, max=1)
    with pytest.raises(ValueError, match="not both"):
        Domain(values=("a",), min=0)
    with pytest.raises(ValueError, match="severity"):
        Comparator(threshold=0.1, severity="loud")
    with pytest.raises(ValueError, match="duplicate feature names: \\['a'\\]"):
        SchemaSpec(features=(FeatureSchema("a", "INT"), FeatureSchema("a", "FLOAT")))
    with pytest.raises(ValueError, match="default_severities"):
        SchemaSpec(default_severities={"NOPE": "warn"})


# --------------------------------------------------------------------------- files


def test_save_load_round_trip_yaml_and_json(train_stats: dict[str, Any], tmp_path: Path) -> None:
    inferred = infer_schema(train_stats)
    curated = SchemaSpec(
        features=(
            *inferred.features[:-1],
            FeatureSchema(
                name="flag",
                type="BOOL",
                presence=Presence(0.5, 10),
                allow_nan=True,
                drift_comparator=Comparator(threshold=0.1),
                skew_comparator=Comparator(threshold=0.2, severity="fail"),
                severity={"FEATURE_TYPE_LOW_FRACTION_PRESENT": "fail"},
                description="Whether the user opted in: 'yes' / \"no\"",
            ),
        ),
        default_severities={"SCHEMA_NEW_COLUMN": "fail"},
    )
    for schema in (inferred, curated):
        for name in ("schema.yaml", "schema.json"):
            path = tmp_path / name
            save_schema(schema, path)
            assert load_schema(path) == schema
            assert load_schema(str(path)) == schema

    save_schema(curated, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["format"] == "jaxtx.schema/1"
    assert schema_from_dict(schema_to_dict(curated)) == curated


def test_yaml_has_curation_header(train_stats: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    save_schema(infer_schema(train_stats, infer_ranges=True), path)
    text = path.read_text()
    assert text.startswith("#")
    header = text[: text.index("format:")]
    assert "Curate it by hand" in header
    assert "drift_comparator" in header and "threshold" in header
    for anomaly_type in DEFAULT_SEVERITIES:
        assert anomaly_type in header
    data = yaml.safe_load(text)
    assert data["features"]["age"]["domain"] == {"min": 17, "max": 90}
    assert data["features"]["workclass"]["domain"] == {"values": ["Gov", "Private", "Self-emp"]}


def test_hand_edited_yaml_loads(train_stats: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    save_schema(infer_schema(train_stats, infer_ranges=True), path)
    text = path.read_text()

    # Add a value to the enum, widen the range, switch on drift, relax a severity.
    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip() == "- Self-emp")
    indent = lines[at][: lines[at].index("-")]
    lines.insert(at + 1, f"{indent}- Without-pay   # seen in serving\n")
    text = "".join(lines).replace("      max: 90\n", "      max: 120\n", 1)
    lines = text.splitlines(keepends=True)
    start = lines.index("  workclass:\n")
    for i in range(start, len(lines)):
        if lines[i] == "    drift_comparator: null\n":
            lines[i] = "    drift_comparator: {threshold: 0.05, severity: fail}  # added\n"
            break
    text = "".join(lines)
    text = text.replace(
        "default_severities: {}", "default_severities:\n  SCHEMA_NEW_COLUMN: fail", 1
    )
    path.write_text(text)

    schema = load_schema(path)
    workclass = schema.feature("workclass")
    assert workclass.domain == Domain(values=("Gov", "Private", "Self-emp", "Without-pay"))
    assert workclass.drift_comparator == Comparator(threshold=0.05, severity="fail")
    assert schema.feature("age").domain == Domain(min=17, max=120)
    assert schema.severity("SCHEMA_NEW_COLUMN", "other") == "fail"
    assert schema.feature("income").drift_comparator is None


def test_minimal_hand_written_yaml(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(
        "features:\n"
        "  age:\n"
        "    type: INT\n"
        "    domain: {max: 120}\n"
        "    drift_comparator: 0.1\n"
        "  name:\n"
        "    type: STRING\n"
    )
    schema = load_schema(path)
    assert schema.feature("age") == FeatureSchema(
        name="age", type="INT", domain=Domain(max=120), drift_comparator=Comparator(0.1)
    )
    assert schema.feature("name").presence == Presence()


_BASE = {
    "features": {
        "age": {"type": "INT", "domain": {"min": 0, "max": 120}},
        "city": {"type": "STRING", "domain": {"values": ["a", "b"]}},
    }
}


def _with(feature: str | None, key: str, value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(_BASE))
    target = data if feature is None else data["features"][feature]
    parts = key.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "feature", "field", "expected", "found"),
    [
        (_with("age", "colour", "red"), "age", "colour", "one of the keys", "'colour'"),
        (_with("age", "type", "INTEGER"), "age", "type", "one of ['INT'", "'INTEGER'"),
        (_with("age", "domain.min", 200), "age", "domain", "min <= max", "200"),
        (_with("age", "domain.max", "ten"), "age", "domain.max", "a number", "'ten'"),
        (
            _with("age", "severity", {"INT_TYPE_BIG_INT": "error"}),
            "age",
            "severity.INT_TYPE_BIG_INT",
            "one of ['warn', 'fail']",
            "'error'",
        ),
        (
            _with("age", "severity", {"NOT_A_TYPE": "warn"}),
            "age",
            "severity.NOT_A_TYPE",
            "an anomaly type",
            "'NOT_A_TYPE'",
        ),
        (
            _with("age", "presence.min_fraction", 1.5),
            "age",
            "presence.min_fraction",
            "between 0 and 1",
            "1.5",
        ),
        (_with("age", "presence.min_count", -1), "age", "presence.min_count", "non-negative", "-1"),
        (_with("age", "allow_nan", "yes"), "age", "allow_nan", "true or false", "'yes'"),
        (
            _with("age", "drift_comparator", {"threshold": -1}),
            "age",
            "drift_comparator.threshold",
            "non-negative number",
            "-1",
        ),
        (
            _with("age", "skew_comparator", {"threshold": 0.1, "severity": "fatal"}),
            "age",
            "skew_comparator.severity",
            "a severity",
            "'fatal'",
        ),
        (_with("city", "domain.values", ["a", 3]), "city", "domain.values", "list of strings", "3"),
        (_with("city", "domain.values", ["a", "a"]), "city", "domain.values", "distinct", "'a'"),
        (_with("city", "domain.min", 0), "city", "domain", "either 'values'", "'min'"),
        (_with("age", "domain", {"values": ["x"]}), "age", "domain.values", "no enum", "'INT'"),
        (_with(None, "colour", 1), None, "colour", "one of the keys", "'colour'"),
        (
            _with(None, "default_severities", {"SCHEMA_NEW_COLUMN": "loud"}),
            None,
            "default_severities.SCHEMA_NEW_COLUMN",
            "a severity",
            "'loud'",
        ),
        (_with(None, "format", "jaxtx.schema/9"), None, "format", "jaxtx.schema/1", "/9"),
    ],
)
def test_malformed_schema_names_file_feature_field(
    tmp_path: Path,
    data: dict[str, Any],
    feature: str | None,
    field: str,
    expected: str,
    found: str,
) -> None:
    for name in ("bad.yaml", "bad.json"):
        path = tmp_path / name
        if name.endswith(".json"):
            path.write_text(json.dumps(data))
        else:
            path.write_text(yaml.safe_dump(data))
        with pytest.raises(SchemaError) as info:
            load_schema(path)
        message = str(info.value)
        assert str(path) in message
        if feature is not None:
            assert f"feature {feature!r}" in message
        assert f"field {field!r}" in message
        assert expected in message
        assert found in message.split("found", 1)[1]


def test_unparsable_yaml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("features:\n  age: [unclosed\n")
    with pytest.raises(SchemaError, match="broken.yaml: not valid YAML"):
        load_schema(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(SchemaError, match=r"broken\.yaml.*expected a mapping"):
        load_schema(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_schema(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- environments


def test_environments_round_trip_and_membership(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(
        "default_environment: [TRAINING, SERVING]\n"
        "features:\n"
        "  age: {type: INT}\n"
        "  label: {type: INT, not_in_environment: [SERVING]}\n"
        "  weight: {type: FLOAT, in_environment: [TRAINING]}\n"
    )
    schema = load_schema(path)
    assert schema.default_environment == ("TRAINING", "SERVING")
    label, weight, age = schema.feature("label"), schema.feature("weight"), schema.feature("age")
    assert label.not_in_environment == ("SERVING",)
    assert not feature_in_environment(schema, label, "SERVING")
    assert feature_in_environment(schema, label, "TRAINING")
    assert feature_in_environment(schema, label, None)
    assert feature_in_environment(schema, weight, "TRAINING")
    assert not feature_in_environment(schema, age, "EVAL")  # not a default environment
    save_schema(schema, tmp_path / "again.yaml")
    assert load_schema(tmp_path / "again.yaml") == schema

    open_schema = SchemaSpec(features=(label,))  # no default_environment: every environment
    assert feature_in_environment(open_schema, label, "TRAINING")
    with pytest.raises(SchemaError, match="not_in_environment"):
        schema_from_dict({"features": {"x": {"type": "INT", "not_in_environment": "SERVING"}}})
