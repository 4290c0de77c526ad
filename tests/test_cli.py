"""The jaxtx command line: run, demo, validate, ui."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from jaxtx.pipelines.cli import main
from jaxtx.pipelines.demo import DEMO_SCHEMA
from jaxtx.pipelines.demo_data import generate_census

PIPELINE_FILE = """
from jaxtx import Pipeline
from jaxtx.components import ExampleGen, StatisticsGen

def create_pipeline(data: str, home: str):
    with Pipeline("cli-test", home=home) as p:
        ex = ExampleGen(input_pattern=data)
        StatisticsGen(examples=ex)
    return p
"""


def test_run_a_pipeline_file_with_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "d.csv"
    generate_census(300, seed=1).to_csv(csv, index=False)
    f = tmp_path / "my_pipeline.py"
    f.write_text(PIPELINE_FILE)
    home = tmp_path / "home"
    args = ["run", f"{f}:create_pipeline", "-p", f"data={csv}", "-p", f"home={home}"]
    assert main([*args, "-p", "ExampleGen.split_ratios=[1,1]"]) == 0
    out = capsys.readouterr().out
    assert "2 ran, 0 cached" in out and "StatisticsGen.statistics:" in out
    assert main([*args, "-p", "ExampleGen.split_ratios=[1,1]"]) == 0
    assert "0 ran, 2 cached" in capsys.readouterr().out
    assert main([*args, "-p", "nope=1"]) == 2
    assert "takes ['data', 'home']" in capsys.readouterr().err


NO_HOME_FILE = """
from jaxtx import Pipeline
from jaxtx.components import ExampleGen

def create_pipeline(data: str):
    with Pipeline("cli-home") as p:
        ExampleGen(input_pattern=data)
    return p
"""


def test_run_home_is_passed_not_put_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "d.csv"
    generate_census(50, seed=1).to_csv(csv, index=False)
    f = tmp_path / "home_pipeline.py"
    f.write_text(NO_HOME_FILE)
    monkeypatch.delenv("JAXTX_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "given-home"
    assert main(["run", f"{f}:create_pipeline", "-p", f"data={csv}", "--home", str(home)]) == 0
    assert "JAXTX_HOME" not in os.environ
    assert (home / "artifacts" / "ExampleGen").is_dir() and (home / "mlflow.db").exists()
    assert not (tmp_path / ".jaxtx").exists()


def test_demo_runs_end_to_end_then_is_cached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    home = tmp_path / "home"
    global_uri = mlflow.get_tracking_uri()
    env_before = {k: os.environ.get(k) for k in ("JAXTX_HOME", "MLFLOW_TRACKING_URI")}
    # Components run in threads: none may switch MLflow's process-wide URI or active run.
    global_calls: list[str] = []
    for name in ("set_tracking_uri", "set_registry_uri", "start_run"):
        monkeypatch.setattr(mlflow, name, lambda *a, _n=name, **k: global_calls.append(_n))
    assert main(["demo", "--rows", "3000", "--epochs", "3", "--no-serve", "--home", str(home)]) == 0
    monkeypatch.undo()
    assert global_calls == []
    assert mlflow.get_tracking_uri() == global_uri
    assert {k: os.environ.get(k) for k in env_before} == env_before
    out = capsys.readouterr().out
    assert "14 ran, 0 cached" in out
    anomalies_dir = next((home / "artifacts" / "ExampleValidator" / "anomalies").iterdir())
    found = json.loads((anomalies_dir / "anomalies.json").read_text())
    assert {a["severity"] for a in found} <= {"warn"}  # drift shows, nothing fails
    assert any("previous span" in a["description"] for a in found)
    gen = next((home / "artifacts" / "ExampleGen" / "examples").iterdir())
    props = json.loads((gen / "artifact.json").read_text())["properties"]
    if props["span"] == 2:
        assert props["num_rejected"] == 3 and props["num_read"] == props["num_written"] + 3
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("census-demo")
    assert len(client.search_runs([exp.experiment_id])) == 15  # 1 parent + 14 components
    # The blessed model is registered, aliased and copied for serving.
    mv = client.get_model_version_by_alias("census", "champion")
    assert str(mv.version) == "1"
    assert (home / "serving" / "census" / "1" / "predict.jaxexport").exists()
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    pyfunc = mlflow.pyfunc.load_model("models:/census@champion")
    raw = generate_census(5, seed=7).drop(columns=["income_over_50k"])
    preds = pyfunc.predict(pd.DataFrame(raw))
    assert (
        list(preds.columns) == ["probabilities", "logits"]
        and preds["probabilities"].between(0, 1).all()
    )

    assert main(["demo", "--rows", "3000", "--epochs", "3", "--no-serve", "--home", str(home)]) == 0
    assert "0 ran, 14 cached" in capsys.readouterr().out


def test_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.csv"
    generate_census(500, seed=1).to_csv(good, index=False)
    assert main(["validate", str(good), "--schema", DEMO_SCHEMA]) == 0
    assert "no anomalies" in capsys.readouterr().out

    bad = tmp_path / "bad.csv"
    df = generate_census(500, seed=2)
    df.loc[:4, "workclass"] = "Astronaut"
    df.to_csv(bad, index=False)
    report = tmp_path / "report.html"
    assert main(["validate", str(bad), "--schema", DEMO_SCHEMA, "--report", str(report)]) == 1
    out = capsys.readouterr().out
    assert "workclass" in out and "ENUM_TYPE_UNEXPECTED_STRING_VALUES" in out
    assert "Astronaut" in report.read_text()

    broken = tmp_path / "broken.yaml"
    broken.write_text("format: jaxtx.schema/1\nfeatures:\n  age: {type: INTEGER}\n")
    assert main(["validate", str(good), "--schema", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml" in err and "age" in err


def test_console_script_and_ui_dry_run(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "jaxtx"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("run", "demo", "validate", "ui"):
        assert cmd in out
    r = subprocess.run(
        [str(exe), "ui", "--home", str(tmp_path), "--dry-run"], capture_output=True, text=True
    )
    assert r.returncode == 0
    assert f"sqlite:///{tmp_path.resolve()}/mlflow.db" in r.stderr and "127.0.0.1" in r.stderr


@pytest.mark.slow
def test_mlflow_ui_shows_the_runs(tmp_path: Path) -> None:
    import socket
    import time
    import urllib.request

    csv = tmp_path / "d.csv"
    generate_census(200, seed=1).to_csv(csv, index=False)
    f = tmp_path / "my_pipeline.py"
    f.write_text(PIPELINE_FILE)
    home = tmp_path / "home"
    assert main(["run", f"{f}:create_pipeline", "-p", f"data={csv}", "-p", f"home={home}"]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "jaxtx"
    proc = subprocess.Popen(
        [str(exe), "ui", "--home", str(home), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search"
        body = json.dumps({"experiment_ids": ["1"], "max_results": 50}).encode()
        deadline, runs = time.time() + 90, None
        while time.time() < deadline and runs is None:
            try:
                req = urllib.request.Request(
                    url, data=body, headers={"Content-Type": "application/json"}
                )
                runs = json.loads(urllib.request.urlopen(req, timeout=5).read())["runs"]
            except OSError:
                time.sleep(0.5)
        assert runs is not None, "the MLflow UI did not answer within 90 s"
        assert {r["info"]["run_name"] for r in runs} >= {"ExampleGen", "StatisticsGen"}
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


FAILING_FILE = """
from jaxtx import Examples, Output, Pipeline, Statistics, component
from jaxtx.components import ExampleGen


@component
def Boom(examples: Examples, out: Output[Statistics]):
    raise ValueError("column 'age' has 3 negative values")


def create_pipeline(data: str, home: str):
    with Pipeline("fail-test", home=home) as p:
        Boom(examples=ExampleGen(input_pattern=data))
    return p
"""

ROOT = Path(__file__).resolve().parents[1]


def test_usage_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    """Each mistake runs as a user would type it; all run at once (each is a
    fresh interpreter)."""
    exe = str(Path(sys.executable).parent / "jaxtx")
    home = str(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if k not in ("JAXTX_HOME", "MLFLOW_TRACKING_URI")}
    empty = tmp_path / "empty"
    empty.mkdir()
    mistakes = {
        "unknown node": (["demo", "--home", home, "-p", "Trainr.seed=1"], "'Trainer'", ROOT),
        "unknown param": (["demo", "--home", home, "-p", "Trainer.sed=1"], "'seed'", ROOT),
        "factory arg on demo": (["demo", "--home", home, "-p", "rows=1000"], "--rows 1000", ROOT),
        "missing schema": (
            ["validate", "x.csv", "--schema", "missing.yaml"],
            "--schema missing.yaml: no such schema file",
            ROOT,
        ),
        "rollback, no store": (
            ["rollback", "census", "--serving-dir", "s"],
            f"no MLflow store at {empty.resolve()}/.jaxtx/mlflow.db",
            empty,
        ),
        "demo.py needs data_root": (["run", "pipelines/demo.py"], "-p data_root=VALUE", ROOT),
        "bad option": (["demo", "--rowz", "5"], "unrecognized arguments: --rowz", ROOT),
        "no such file": (["run", "nope.py"], "nope.py: no such file", ROOT),
    }
    procs = {
        k: subprocess.Popen(
            [exe, *argv],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, (argv, _, cwd) in mistakes.items()
    }
    for k, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (k, err)
        assert len(lines) == 1 and mistakes[k][1] in lines[0], (k, err)
        assert "Traceback" not in err + out, k
    assert not (empty / ".jaxtx").exists()  # rollback created no store


def test_a_file_inside_a_package_runs_as_its_module(tmp_path: Path) -> None:
    from jaxtx.pipelines._targets import load_target

    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("NAME = 'from-helpers'\n")
    (pkg / "pipe.py").write_text("from .helpers import NAME\n\npipeline = NAME\n")
    assert load_target(f"{pkg / 'pipe.py'}") == "from-helpers"
    # The repository's own demo is jaxtx.pipelines.demo, not a second copy.
    import jaxtx.pipelines.demo as demo

    assert load_target(str(ROOT / "pipelines" / "demo.py")) is demo.create_pipeline


def test_a_failing_pipeline_prints_the_component_and_cause_briefly(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    generate_census(50, seed=1).to_csv(csv, index=False)
    f = tmp_path / "failing.py"
    f.write_text(FAILING_FILE)
    exe = str(Path(sys.executable).parent / "jaxtx")
    r = subprocess.run(
        [exe, "run", str(f), "-p", f"data={csv}", "-p", f"home={tmp_path / 'h'}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(err) <= 12, r.stderr
    assert any("Boom" in line and "3 negative values" in line for line in err)
    assert "--verbose" in err[-1]


def test_help_lists_defaults_exit_codes_and_version() -> None:
    exe = str(Path(sys.executable).parent / "jaxtx")
    top = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "exit codes:" in top and "2  bad usage" in top
    demo = subprocess.run([exe, "demo", "--help"], capture_output=True, text=True, check=True)
    assert "(default: 20000)" in demo.stdout and "(default: 8501)" in demo.stdout
    v = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert v.stdout.startswith("jaxtx ")


def test_every_option_has_help() -> None:
    import argparse

    from jaxtx.pipelines.cli import _parser

    parser = _parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, (name, action.dest)
