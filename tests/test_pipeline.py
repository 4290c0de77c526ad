"""Components and pipelines: wiring checks, eager calls, Prefect runs, caching, MLflow lineage."""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from jaxtx import Artifact, Output, Pipeline, PipelineRunError, Statistics, component
from jaxtx.components import ComponentError, WiringError
from jaxtx.pipelines import PipelineError


class Numbers(Artifact):
    """A JSON list of numbers."""


def _write(out: Output[Numbers], xs: list[float]) -> None:
    (out.path / "nums.json").write_text(json.dumps(xs))


@component
def Make(nums: Output[Numbers], *, n: int = 5) -> dict[str, float]:
    _write(nums, list(range(n)))
    nums.properties["n"] = n
    (nums.reports_dir / "report.html").write_text(f"<h1>{n} numbers</h1>")
    return {"made": n}


@component
def Scale(nums: Numbers, scaled: Output[Numbers], *, factor: float = 2.0) -> None:
    _write(scaled, [x * factor for x in nums.read_json("nums.json")])


@component
def Total(a: Numbers, total: Output[Numbers], b: Numbers | None = None) -> None:
    xs = a.read_json("nums.json") + (b.read_json("nums.json") if b else [])
    _write(total, [sum(xs)])


@component
def Split(nums: Numbers, low: Output[Numbers], high: Output[Numbers], *, at: float = 2) -> None:
    xs = nums.read_json("nums.json")
    _write(low, [x for x in xs if x < at])
    _write(high, [x for x in xs if x >= at])


def _value(art: Artifact) -> list[float]:
    return art.read_json("nums.json")


# -- eager use ---------------------------------------------------------------------------------
def test_eager_call_returns_artifacts(store) -> None:
    nums = Make(n=4, store=store)
    assert isinstance(nums, Numbers) and _value(nums) == [0, 1, 2, 3]
    parts = Split(nums=nums, at=2, store=store)
    assert _value(parts.low) == [0, 1] and _value(parts.high) == [2, 3]
    assert _value(Total(a=parts.low, b=parts.high, store=store)) == [6]


def test_signature_is_kept_without_outputs() -> None:
    sig = inspect.signature(Scale)
    assert list(sig.parameters) == ["nums", "factor"]
    assert Scale.__doc__ is None or isinstance(Scale.__doc__, str)
    assert Scale.__name__ == "Scale"


def test_eager_errors_name_what_is_wrong(store) -> None:
    nums = Make(n=2, store=store)
    with pytest.raises(ComponentError, match="did you mean 'factor'"):
        Scale(nums=nums, factr=3, store=store)
    with pytest.raises(ComponentError, match="by keyword"):
        Scale(nums, store=store)
    with pytest.raises(WiringError, match="missing input 'nums'"):
        Scale(store=store)

    out = store.new_output(Statistics, "X", "stats")
    stats = store.commit(out)
    with pytest.raises(
        WiringError, match="input 'nums': expects Numbers, but artifact .* is Statistics"
    ):
        Scale(nums=stats, store=store)

    @component
    def ReturnsJunk(o: Output[Numbers]) -> object:
        _write(o, [])
        return [1, 2]

    with pytest.raises(ComponentError, match="returns None or a mapping"):
        ReturnsJunk(store=store)


# -- building --------------------------------------------------------------------------------------
def test_build_rejects_type_mismatch_naming_both_types() -> None:
    @component
    def NeedsStats(stats: Statistics, out: Output[Numbers]) -> None: ...

    with pytest.raises(WiringError) as e, Pipeline("bad"):
        m = Make()
        NeedsStats(stats=m.outputs.nums)
    msg = str(e.value)
    assert "NeedsStats" in msg and "'stats'" in msg and "Statistics" in msg and "Numbers" in msg


def test_build_rejects_missing_input_and_cycles() -> None:
    with pytest.raises(PipelineError, match="missing its required input 'nums'"), Pipeline("p"):
        Scale()

    with (
        pytest.raises(PipelineError, match="cycle: (a -> b -> a|b -> a -> b)"),
        Pipeline("cyc"),
    ):
        a = Scale().with_id("a")
        b = Scale(nums=a).with_id("b")
        a.connect("nums", b)


def test_duplicate_components_get_unique_ids() -> None:
    with Pipeline("ids") as p:
        m = Make()
        Scale(nums=m)
        Scale(nums=m, factor=3)
    assert [n.id for n in p.topological_order()] == ["Make", "Scale", "Scale_2"]
    with pytest.raises(PipelineError, match="no parameter 'nope'"):
        p.with_params({"Scale.nope": 1})


# -- running ---------------------------------------------------------------------------------------
def _diamond(home: Path) -> Pipeline:
    with Pipeline("diamond", home=str(home)) as p:
        m = Make(n=4)
        a = Scale(nums=m, factor=2).with_id("double")
        b = Scale(nums=m, factor=3).with_id("triple")
        Total(a=a, b=b)
    return p


def test_run_caches_and_reruns_only_what_changed(home: Path) -> None:
    p = _diamond(home)
    r1 = p.run()
    assert sorted(r1.executed_nodes) == ["Make", "Total", "double", "triple"]
    assert _value(r1.output("Total")) == [(0 + 1 + 2 + 3) * 5]

    r2 = p.run()
    assert r2.executed_nodes == [] and len(r2.cached_nodes) == 4
    assert r2.output("Total") == r1.output("Total")

    r3 = p.run(params={"triple.factor": 10})
    assert sorted(r3.executed_nodes) == ["Total", "triple"]
    assert _value(r3.output("Total")) == [6 * 2 + 6 * 10]

    r4 = p.run(cache=False)
    assert len(r4.executed_nodes) == 4

    r5 = p.with_node(p["double"].with_options(cache=False)).run()
    assert r5.executed_nodes == ["double"]  # same output fingerprint, so Total stays cached


def test_cache_does_not_trust_a_damaged_output(home: Path) -> None:
    p = _diamond(home)
    r1 = p.run()
    victim = Path(r1.output("double").uri) / "nums.json"
    victim.write_text("[666]")
    r2 = p.run()
    assert "double" in r2.executed_nodes
    assert _value(r2.output("Total")) == _value(r1.output("Total"))


def test_independent_nodes_run_concurrently(home: Path) -> None:
    @component
    def Slow(nums: Numbers, out: Output[Numbers], *, tag: str = "") -> None:
        start = time.time()
        time.sleep(1.0)
        _write(out, [start, time.time()])

    with Pipeline("conc", home=str(home)) as p:
        m = Make()
        Slow(nums=m, tag="a").with_id("a")
        Slow(nums=m, tag="b").with_id("b")
    r = p.run()
    (a0, a1), (b0, b1) = _value(r.output("a")), _value(r.output("b"))
    assert a0 < b1 and b0 < a1, "the two independent nodes did not overlap in time"


def test_retries_come_from_prefect(home: Path, tmp_path: Path) -> None:
    counter = tmp_path / "attempts"

    @component(retries=2, retry_delay_seconds=0)
    def Flaky(out: Output[Numbers], *, path: str) -> None:
        n = int(Path(path).read_text()) if Path(path).exists() else 0
        Path(path).write_text(str(n + 1))
        if n < 2:
            raise ConnectionError(f"transient failure {n}")
        _write(out, [n])

    r = Pipeline("retry", nodes=[Flaky.node(path=str(counter))], home=str(home)).run()
    assert _value(r.output("Flaky")) == [2]
    assert counter.read_text() == "3"


def test_failure_names_the_node_and_skips_downstream(home: Path) -> None:
    @component
    def Boom(nums: Numbers, out: Output[Numbers]) -> None:
        raise ValueError("bad value in column 'x'")

    with Pipeline("fail", home=str(home)) as p:
        m = Make()
        b = Boom(nums=m)
        Scale(nums=b)
    with pytest.raises(PipelineRunError, match="bad value in column 'x'"):
        p.run()
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fail")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert runs["Boom"].info.status == "FAILED"
    assert "bad value" in runs["Boom"].data.tags["jaxtx.error"]
    assert "Scale" not in runs
    parent = [r for r in runs.values() if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and parent[0].info.status == "FAILED"


def test_mlflow_gets_parent_and_nested_runs_with_lineage(home: Path) -> None:
    p = _diamond(home)
    r = p.run(run_name="lineage-check")
    client = MlflowClient(r.tracking_uri)
    parent = client.get_run(r.mlflow_run_id)
    assert parent.info.run_name == "lineage-check"
    assert parent.data.tags["prefect.flow_run_id"] == r.flow_run_id
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{r.mlflow_run_id}'"
    )
    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == {"Make", "double", "triple", "Total"}
    make, total = by_name["Make"], by_name["Total"]
    assert make.data.params["param.n"] == "4"
    assert make.data.metrics["made"] == 4 and make.data.metrics["nums.n"] == 4
    assert "duration_s" in make.data.metrics
    # Lineage: Total's inputs are exactly double's and triple's outputs.
    assert total.data.tags["jaxtx.input.a.fingerprint"] == r.output("double").fingerprint
    assert total.data.tags["jaxtx.input.b.uri"] == r.output("triple").uri
    assert total.data.tags["jaxtx.output.total.fingerprint"] == r.output("Total").fingerprint
    # Reports are MLflow artifacts.
    files = [f.path for f in client.list_artifacts(make.info.run_id, "reports/nums")]
    assert files == ["reports/nums/report.html"]


def test_a_cached_node_is_logged_like_one_that_ran(home: Path) -> None:
    """A cached node's MLflow run is written in fewer store calls: same record."""
    p = _diamond(home)
    first, again = p.run(), p.run()
    assert again.executed_nodes == []
    client = MlflowClient(again.tracking_uri)
    same = ("jaxtx.input.", "jaxtx.output.", "jaxtx.node", "jaxtx.component", "jaxtx.status")
    for node in ("Make", "Total"):
        ran = client.get_run(first[node].mlflow_run_id)
        cached = client.get_run(again[node].mlflow_run_id)
        assert cached.info.status == "FINISHED" and cached.info.run_name == node
        assert cached.data.params == ran.data.params
        assert {k: v for k, v in cached.data.tags.items() if k.startswith(same)} == {
            k: v for k, v in ran.data.tags.items() if k.startswith(same)
        }
        assert cached.data.tags["jaxtx.cached"] == "true" and cached.data.metrics["cached"] == 1
        assert cached.data.tags["mlflow.parentRunId"] == again.mlflow_run_id
        assert set(cached.data.metrics) == set(ran.data.metrics)
    files = [f.path for f in client.list_artifacts(again["Make"].mlflow_run_id, "reports/nums")]
    assert files == ["reports/nums/report.html"]


def test_user_code_version_invalidates_cache(home: Path) -> None:
    def build(version: str) -> Pipeline:
        @component(name="Versioned", version=version)
        def Versioned(out: Output[Numbers]) -> None:
            _write(out, [1])

        return Pipeline("ver", nodes=[Versioned.node()], home=str(home))

    assert build("1").run().executed_nodes == ["Versioned"]
    assert build("1").run().executed_nodes == []
    assert build("2").run().executed_nodes == ["Versioned"]


def test_verdict_stops_the_pipeline_after_writing_outputs(home: Path) -> None:
    from jaxtx import PipelineStopped

    def too_big(outputs) -> str | None:
        total = _value(outputs["total"])[0]
        return f"total {total} is over 5; see {outputs['total'].uri}" if total > 5 else None

    Gate = component(name="Gate", verdict=too_big)(Total.fn)
    with Pipeline("gate", home=str(home)) as p:
        m = Make(n=4)
        g = Gate(a=m)
        Scale(nums=g).with_id("after")
    with pytest.raises(PipelineStopped, match="Gate: total 6 is over 5") as e:
        p.run()
    assert _value(e.value.outputs["total"]) == [6]
    # The reason is a tag on the component's run and on the parent run.
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gate").experiment_id
    gate = client.search_runs([exp], "tags.`jaxtx.node` = 'Gate'")[0]
    assert gate.data.tags["jaxtx.status"] == "stopped"
    assert "total 6 is over 5" in gate.data.tags["jaxtx.stop_reason"]
    parent = client.get_run(gate.data.tags["mlflow.parentRunId"])
    assert "total 6 is over 5" in parent.data.tags["jaxtx.stop_reason"]
    assert parent.info.status == "FAILED"
    # Cached or not, the verdict is given again.
    with pytest.raises(PipelineStopped):
        p.run()


# -- values, not mutation ----------------------------------------------------------------------------
def test_run_overrides_apply_to_a_copy(home: Path) -> None:
    p = _diamond(home)
    r1 = p.run(params={"triple.factor": 10})
    assert _value(r1.output("Total")) == [6 * 2 + 6 * 10]
    assert p["triple"].params["factor"] == 3
    r2 = p.run()
    assert _value(r2.output("Total")) == [6 * 2 + 6 * 3]
    changed = p.with_params({"triple.factor": 7})
    assert changed["triple"].params["factor"] == 7 and p["triple"].params["factor"] == 3


def test_node_options_return_copies() -> None:
    node = Make.node(n=3)
    quiet = node.with_options(cache=False, retries=4)
    named = node.with_id("maker")
    assert (node.cache, node.retries, node.id) == (True, 0, "Make")
    assert (quiet.cache, quiet.retries) == (False, 4) and named.id == "maker"
    assert quiet is not node and named is not node
    scale = Scale.node(nums=node)
    rewired = scale.connect("nums", named)
    assert scale.inputs["nums"].node is node and rewired.inputs["nums"].node is named


def test_pipeline_with_node_replaces_a_copy(home: Path) -> None:
    p = _diamond(home)
    p2 = p.with_node(p["double"].with_options(cache=False))
    assert p["double"].cache is True and p2["double"].cache is False
    assert [n.id for n in p2.topological_order()] == [n.id for n in p.topological_order()]


def test_subset_is_built_through_the_constructor(home: Path) -> None:
    p = _diamond(home)
    sub = p.subset(["double"])
    assert [n.id for n in sub.topological_order()] == ["Make", "double"]
    assert sub.home == p.home
    changed = sub.with_params({"double.factor": 5})
    assert p["double"].params["factor"] == 2 and changed["double"].params["factor"] == 5
    assert _value(sub.run().output("double")) == [0, 2, 4, 6]


# -- the cache key -----------------------------------------------------------------------------------
USER_MODULE = '''
import json

from jaxtx import Artifact, Output, component


class Nums(Artifact):
    """Numbers."""


def _used(n):
    return [i * {factor} for i in range(n)]


def _unrelated():
    """{doc}"""
    return {unrelated}


@component(version="{version}")
def Produce(out: Output[Nums], *, n: int = 3) -> None:
    (out.path / "nums.json").write_text(json.dumps(_used(n)))
'''


def _user_component(tmp_path: Path, tag: str, **edits: object):
    import importlib.util

    values = {"factor": 2, "doc": "help", "unrelated": 1, "version": "1", **edits}
    folder = tmp_path / tag
    folder.mkdir()
    path = folder / "user_mod.py"
    path.write_text(USER_MODULE.format(**values))
    spec = importlib.util.spec_from_file_location(f"user_mod_{tag}", path)
    mod = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.Produce


def test_cache_key_covers_own_code_version_and_params_only(tmp_path: Path) -> None:
    base = _user_component(tmp_path, "base")
    assert base.code_inputs() == {"functions": ["Produce", "_used"], "modules": []}
    key = base.cache_key({}, {"n": 3})
    # An unrelated helper (code or docstring) in the same module: same key.
    assert (
        _user_component(tmp_path, "unrel", unrelated=2, doc="other").cache_key({}, {"n": 3}) == key
    )
    # The component's own code (a helper it calls), its version, its params: new key.
    assert _user_component(tmp_path, "helper", factor=3).cache_key({}, {"n": 3}) != key
    assert _user_component(tmp_path, "ver", version="2").cache_key({}, {"n": 3}) != key
    assert base.cache_key({}, {"n": 4}) != key


def test_builtin_cache_key_hashes_its_library_modules_only() -> None:
    from jaxtx.components import StatisticsGen

    modules = StatisticsGen.code_inputs()["modules"]
    assert "jaxtx.validation.statistics" in modules
    assert not any(
        m.startswith(("jaxtx.serving", "jaxtx.trainer", "jaxtx.pipelines")) for m in modules
    )
    assert "jaxtx.components._component" not in modules


def test_run_summary_outcomes_and_parent_run(home: Path, capsys) -> None:
    from jaxtx.components import Outcome

    @component(summary=lambda outputs, metrics: Outcome("warn", f"made {metrics['made']:g}"))
    def Summed(out: Output[Numbers]) -> dict[str, float]:
        _write(out, [1])
        return {"made": 1}

    p = Pipeline("summed", nodes=[Summed.node()], home=str(home))
    r1 = p.run()
    r2 = p.run()
    err = capsys.readouterr().err
    assert "Summary of summed" in err and "made 1 (cached)" in err
    # The UI link opens MLflow's model-training view, not its default GenAI view.
    assert f"/runs/{r2.mlflow_run_id}?workflowType=machine_learning" in err
    assert r2["Summed"].outcome == Outcome("warn", "made 1")
    client = MlflowClient(r2.tracking_uri)
    first, second = client.get_run(r1.mlflow_run_id), client.get_run(r2.mlflow_run_id)
    assert (first.info.run_name, second.info.run_name) == ("summed #1", "summed #2")
    assert second.data.tags["mlflow.note.content"] == r2.summary
    for tag in ("jaxtx.owner.host", "jaxtx.owner.pid", "jaxtx.owner.started"):
        assert tag in second.data.tags
    node = client.get_run(r2["Summed"].mlflow_run_id)
    assert node.data.tags["jaxtx.status"] == "warn"


def test_parent_run_records_overrides(home: Path) -> None:
    r = _diamond(home).run(params={"triple.factor": 10})
    parent = MlflowClient(r.tracking_uri).get_run(r.mlflow_run_id)
    assert parent.data.params["override.triple.factor"] == "10"
    assert parent.info.run_name == "diamond #1"
