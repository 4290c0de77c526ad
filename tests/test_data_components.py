"""The data front half as components: ExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from mlflow import MlflowClient

from jaxtx import Examples, Output, Pipeline, PipelineStopped, Statistics, component
from jaxtx.components.example_gen import ExampleGen
from jaxtx.components.example_validator import ExampleValidator
from jaxtx.components.schema_gen import ImportSchema, SchemaGen
from jaxtx.components.statistics_gen import StatisticsGen
from jaxtx.pipelines.demo_data import generate_census


def _write_spans(root: Path, rows: int = 600) -> str:
    for span, drift in ((1, 0.0), (2, 0.0)):
        d = root / f"span-{span}"
        d.mkdir(parents=True)
        generate_census(rows, seed=span, drift=drift).to_csv(d / "part.csv", index=False)
    return str(root / "span-{SPAN}" / "*.csv")


def test_examplegen_statistics_schema_validator_eagerly(tmp_path: Path, store) -> None:
    pattern = _write_spans(tmp_path / "data")
    ex = ExampleGen(input_pattern=pattern, store=store)
    assert ex.properties["span"] == 2
    assert ex.properties["num_read"] == 600 == ex.properties["num_written"]
    assert sum(ex.properties["split_counts"].values()) == 600
    assert ex.read("train").num_rows == ex.properties["split_counts"]["train"]

    stats = StatisticsGen(examples=ex, histogram_png=True, store=store)
    assert stats.split_names == ["train", "eval"]
    age = stats.split("train")["features"]["age"]
    train = ex.read("train")
    assert age["num"]["mean"] == pytest.approx(pc.mean(train["age"]).as_py())
    assert (Path(stats.uri) / "reports" / "statistics.html").read_text().count("age") > 0
    assert (Path(stats.uri) / "reports" / "histograms-train.png").stat().st_size > 1000

    schema = SchemaGen(statistics=stats, store=store)
    parsed = schema.load()
    assert parsed.feature("age").type == "INT"
    assert "Private" in parsed.feature("workclass").domain.values

    anomalies = ExampleValidator(statistics=stats, schema=schema, store=store)
    assert anomalies.anomalies() == []
    assert anomalies.properties["num_failing"] == 0


def test_validator_fail_stops_with_feature_anomaly_and_report(tmp_path: Path, store) -> None:
    good = tmp_path / "good.csv"
    bad = tmp_path / "bad.csv"
    generate_census(400, seed=1).to_csv(good, index=False)
    df = generate_census(400, seed=2)
    df.loc[:9, "age"] = 150  # out of the schema's range
    df.to_csv(bad, index=False)
    schema = SchemaGen(
        statistics=StatisticsGen(
            examples=ExampleGen(input_pattern=str(good), store=store), store=store
        ),
        infer_ranges=True,  # TFDV infers no ranges by default
        store=store,
    )
    stats = StatisticsGen(examples=ExampleGen(input_pattern=str(bad), store=store), store=store)
    with pytest.raises(PipelineStopped) as e:
        ExampleValidator(statistics=stats, schema=schema, store=store)
    msg = str(e.value)
    assert "'age'" in msg and "INT_TYPE_BIG_INT" in msg and "reports/anomalies.html" in msg
    anomalies = e.value.outputs["anomalies"]
    assert Path(anomalies.file("reports/anomalies.html")).exists()
    assert any(a["type"] == "INT_TYPE_BIG_INT" for a in anomalies.anomalies())


def test_drift_and_skew_against_baseline_and_serving(tmp_path: Path, store) -> None:
    for span, drift in ((1, 0.0), (2, 1.0)):
        d = tmp_path / f"span-{span}"
        d.mkdir()
        generate_census(3000, seed=span, drift=drift).to_csv(d / "x.csv", index=False)
    serving = tmp_path / "serving.jsonl"
    generate_census(1000, seed=9, drift=0.0).drop(columns=["income_over_50k"]).to_json(
        serving, orient="records", lines=True
    )
    pattern = str(tmp_path / "span-{SPAN}" / "x.csv")
    cur = StatisticsGen(examples=ExampleGen(input_pattern=pattern, store=store), store=store)
    prev = StatisticsGen(
        examples=ExampleGen(input_pattern=pattern, span="latest-1", store=store), store=store
    )
    srv = StatisticsGen(
        examples=ExampleGen(
            input_pattern=str(serving), split_names=["serving"], split_ratios=[1], store=store
        ),
        store=store,
    )
    # A curated schema: inferred from the previous span, with comparators on.
    schema_file = tmp_path / "schema.yaml"
    text = Path(SchemaGen(statistics=prev, store=store).file("schema.yaml")).read_text()
    text = text.replace("drift_comparator: null", "drift_comparator: {threshold: 0.02}", 1)
    text = text.replace("skew_comparator: null", "skew_comparator: {threshold: 0.02}", 1)
    text = text.replace("default_severities: {}", "default_severities: {INT_TYPE_BIG_INT: warn}")
    schema_file.write_text(text)
    schema = ImportSchema(schema_file=str(schema_file), store=store)
    result = ExampleValidator(
        statistics=cur, schema=schema, baseline_statistics=prev, serving_statistics=srv, store=store
    )
    found = {(a["feature"], a["type"], a["split"]) for a in result.anomalies()}
    assert ("age", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH", "train") in found
    descriptions = " ".join(a["description"] for a in result.anomalies())
    assert "previous span" in descriptions and "serving" in descriptions


def test_user_component_between_two_builtins(tmp_path: Path, home: Path) -> None:
    """A user-defined component wired between ExampleGen and StatisticsGen."""

    @component
    def DropMinors(examples: Examples, adults: Output[Examples], *, min_age: int = 18) -> dict:
        import pyarrow.parquet as pq

        kept = 0
        for split in examples.split_names:
            d = adults.path / "data" / split
            d.mkdir(parents=True)
            t = examples.read(split)
            t = t.filter(pc.greater_equal(t["age"], min_age))
            kept += t.num_rows
            pq.write_table(t, d / "part-00000-of-00001.parquet")
        adults.properties["split_names"] = examples.split_names
        return {"kept": kept}

    csv = tmp_path / "d.csv"
    generate_census(500, seed=3).to_csv(csv, index=False)
    with Pipeline("user-comp", home=str(home)) as p:
        ex = ExampleGen(input_pattern=str(csv))
        adults = DropMinors(examples=ex, min_age=30)
        StatisticsGen(examples=adults)
    run = p.run()
    stats: Statistics = run.output("StatisticsGen")  # type: ignore[assignment]
    assert stats.split("train")["features"]["age"]["num"]["min"] >= 30
    assert (
        run["DropMinors"].metrics["kept"]
        == stats.properties["num_rows"]["train"] + stats.properties["num_rows"]["eval"]
    )


def test_examplegen_cache_sees_new_input_files(tmp_path: Path, home: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    generate_census(200, seed=1).to_csv(data / "a.csv", index=False)
    p = Pipeline("inputs", nodes=[ExampleGen.node(input_pattern=str(data))], home=str(home))
    assert p.run().executed_nodes == ["ExampleGen"]
    assert p.run().executed_nodes == []
    generate_census(100, seed=2).to_csv(data / "b.csv", index=False)
    r = p.run()
    assert r.executed_nodes == ["ExampleGen"]
    assert r.output("ExampleGen").properties["num_read"] == 300


def test_examplegen_quarantine_is_counted_and_logged(tmp_path: Path, home: Path) -> None:
    csv = tmp_path / "dirty.csv"
    lines = generate_census(300, seed=4).to_csv(index=False).splitlines()
    lines.insert(10, "x,y")  # wrong field count, physical line 11
    csv.write_text("\n".join(lines) + "\n")
    p = Pipeline("dirty", nodes=[ExampleGen.node(input_pattern=str(csv))], home=str(home))
    run = p.run()
    ex: Examples = run.output("ExampleGen")  # type: ignore[assignment]
    props = ex.properties
    assert props["num_read"] == 301 and props["num_rejected"] == 1 and props["num_written"] == 300
    (q,) = ex.quarantine_files()
    rec = json.loads(Path(q).read_text().splitlines()[0])
    assert rec["line"] == 11 and rec["source"].endswith("dirty.csv")
    client = MlflowClient(run.tracking_uri)
    m = client.get_run(run["ExampleGen"].mlflow_run_id).data.metrics
    assert m["num_rejected"] == 1 and m["num_read"] == m["num_written"] + m["num_rejected"]


def test_missing_input_names_the_path(tmp_path: Path, store) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ExampleGen(input_pattern=str(tmp_path / "nowhere" / "*.csv"), store=store)


def test_arrow_record_batches_flow_through(tmp_path: Path, store) -> None:
    t = pa.table({"a": [1, 2, 3] * 50, "b": ["x", "y", "z"] * 50})
    import pyarrow.parquet as pq

    pq.write_table(t, tmp_path / "t.parquet")
    ex = ExampleGen(input_pattern=str(tmp_path / "t.parquet"), store=store)
    assert ex.properties["arrow_schema"] == {"a": "int64", "b": "string"}


def test_one_stray_value_is_quarantined_not_a_type_change(tmp_path: Path, store) -> None:
    lines = generate_census(1000, seed=5).to_csv(index=False).splitlines()
    first = lines[50].split(",", 1)
    lines[50] = "forty," + first[1]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    ex = ExampleGen(input_pattern=str(tmp_path / "d.csv"), store=store)
    assert ex.properties["arrow_schema"]["age"] == "int64"
    assert ex.properties["num_rejected"] == 1
    (q,) = ex.quarantine_files()
    rec = json.loads(Path(q).read_text().splitlines()[0])
    assert rec["line"] == 51 and "'age'" in rec["reason"] and "forty" in rec["reason"]
