"""Settings: explicit arguments > environment > jaxtx.toml > embedded defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxtx import Artifact, Output, component
from jaxtx.components import ArtifactStore, RunContext
from jaxtx.core.settings import Settings, SettingsError

CLUSTER_TOML = """
home = "state"
tracking_uri = "http://mlflow.internal:5000"
artifact_root = "s3://ml-artifacts/jaxtx"
task_runner = "dask://dask-scheduler.internal:8786"
prefect_api_url = "http://prefect.internal:4200/api"

[beam]
runner = "dask"
dask_client_address = "tcp://dask-scheduler.internal:8786"
"""


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_embedded_defaults_without_file_or_environment(cwd: Path) -> None:
    s = Settings.resolve(environ={})
    assert s.home == cwd / ".jaxtx"
    assert s.tracking_uri == f"sqlite:///{cwd / '.jaxtx' / 'mlflow.db'}"
    assert s.artifact_root == str(cwd / ".jaxtx" / "artifacts")
    assert s.beam_options == ()
    assert s.task_runner == "threads" and s.dask_address is None
    assert s.prefect_api_url is None and s.source is None


def test_file_in_the_working_folder_sets_everything(cwd: Path) -> None:
    (cwd / "jaxtx.toml").write_text(CLUSTER_TOML)
    s = Settings.resolve(environ={})
    assert s.source == cwd / "jaxtx.toml"
    assert s.home == cwd / "state"  # relative to the file's folder
    assert s.tracking_uri == "http://mlflow.internal:5000"
    assert s.artifact_root == "s3://ml-artifacts/jaxtx"
    assert s.beam_options == (
        "--runner=dask",
        "--dask_client_address=tcp://dask-scheduler.internal:8786",
    )
    assert s.dask_address == "tcp://dask-scheduler.internal:8786"
    assert s.prefect_api_url == "http://prefect.internal:4200/api"


def test_environment_beats_file_and_arguments_beat_environment(cwd: Path) -> None:
    (cwd / "jaxtx.toml").write_text(CLUSTER_TOML)
    env = {
        "MLFLOW_TRACKING_URI": "http://env:5000",
        "JAXTX_BEAM_OPTIONS": "--runner=direct --direct_num_workers=2",
        "JAXTX_TASK_RUNNER": "threads",
        "JAXTX_ARTIFACT_ROOT": "env-artifacts",
    }
    s = Settings.resolve(environ=env)
    assert s.tracking_uri == "http://env:5000"
    assert s.beam_options == ("--runner=direct", "--direct_num_workers=2")
    assert s.task_runner == "threads"
    assert s.artifact_root == str(cwd / "env-artifacts")  # relative to the CWD
    assert s.prefect_api_url == "http://prefect.internal:4200/api"  # from the file
    s = Settings.resolve(
        environ=env,
        tracking_uri="http://arg:5000",
        beam_options={"runner": "flink", "flink_master": "h:8081"},
        task_runner="tcp://arg:8786",
    )
    assert s.tracking_uri == "http://arg:5000"
    assert s.beam_options == ("--runner=flink", "--flink_master=h:8081")
    assert s.dask_address == "tcp://arg:8786"


def test_file_named_by_argument_or_environment_and_in_home(cwd: Path, tmp_path: Path) -> None:
    other = tmp_path / "conf"
    other.mkdir()
    (other / "cluster.toml").write_text('task_runner = "dask://a:1"\n')
    assert Settings.resolve(config=other / "cluster.toml", environ={}).task_runner == "dask://a:1"
    env = {"JAXTX_CONFIG": str(other / "cluster.toml")}
    assert Settings.resolve(environ=env).task_runner == "dask://a:1"
    home = tmp_path / "home"
    home.mkdir()
    (home / "jaxtx.toml").write_text('tracking_uri = "http://home:5000"\n')
    assert Settings.resolve(environ={"JAXTX_HOME": str(home)}).tracking_uri == "http://home:5000"
    with pytest.raises(SettingsError, match="does not exist"):
        Settings.resolve(config=tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('tracking_url = "x"\n', r"unknown key\(s\) tracking_url"),
        ("task_runner = 3\n", "task_runner must be a string"),
        ("[beam]\nrunner = [1]\n", r"\[beam\] runner must be"),
        ("home = \n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_file_and_key(cwd: Path, text: str, match: str) -> None:
    (cwd / "jaxtx.toml").write_text(text)
    with pytest.raises(SettingsError, match=match) as e:
        Settings.resolve(environ={})
    assert str(cwd / "jaxtx.toml") in str(e.value)


def test_bad_task_runner_is_explained() -> None:
    s = Settings.resolve(home="/tmp/x", task_runner="kubernetes", environ={})
    with pytest.raises(SettingsError, match="neither 'threads' nor a Dask"):
        _ = s.dask_address


class Seen(Artifact):
    """What the component was given."""


@component
def RecordBeam(seen: Output[Seen], *, beam_options: list[str] | None = None) -> None:
    (seen.path / "beam.json").write_text(json.dumps(beam_options))


def test_components_default_to_the_settings_beam_options(cwd: Path) -> None:
    (cwd / "jaxtx.toml").write_text('[beam]\nrunner = "direct"\ndirect_num_workers = 2\n')
    art = RecordBeam(store=str(cwd / "store"))
    assert art.read_json("beam.json") == ["--runner=direct", "--direct_num_workers=2"]
    art = RecordBeam(store=str(cwd / "store2"), beam_options=["--runner=dask"])
    assert art.read_json("beam.json") == ["--runner=dask"]
    settings = Settings.resolve(beam_options=["--runner=flink"], environ={})
    result = RecordBeam.execute(
        {},
        {"beam_options": None},
        ArtifactStore(str(cwd / "store3")),
        producer={"component": "RecordBeam"},
        context=RunContext(node_id="n", settings=settings),
    )
    assert result.outputs["seen"].read_json("beam.json") == ["--runner=flink"]
