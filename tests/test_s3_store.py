"""The artifact store on S3: moto's standalone server on 127.0.0.1 stands in for S3/MinIO.

Endpoint and credentials come from the standard ``AWS_*`` variables, which both
readers of ``s3://`` honour: pyarrow's S3 filesystem (the artifact store,
``Examples.read``) and Beam's (StatisticsGen reads the Parquet shards through
``apache_beam.io.filesystems``, boto3 underneath).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from _services import S3Server, patient_prefect, s3_server

from jaxtx.components import (
    ArtifactCorruptError,
    ArtifactError,
    ArtifactStore,
    Examples,
    Statistics,
)

# Anything in the environment that could send the clients elsewhere than the local server.
_AWS_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CA_BUNDLE",
)


@pytest.fixture(autouse=True)
def _patient_prefect() -> Iterator[None]:
    with patient_prefect():
        yield


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        print(
            f"\nservices: moto {server.version} S3 server at {server.endpoint}; pyarrow {pa.__version__}"
        )
        yield server


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh bucket; the environment points pyarrow, Beam and boto3 at the moto server."""
    for var in _AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("JAXTX_HOME", str(tmp_path / "home"))
    name = f"jaxtx-{uuid.uuid4().hex[:12]}"
    _fs().create_dir(name)
    return f"s3://{name}"


def _fs() -> pafs.S3FileSystem:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    scheme, host = endpoint.split("://", 1)
    return pafs.S3FileSystem(
        endpoint_override=host,
        scheme=scheme,
        region="us-east-1",
        access_key="testing",
        secret_key="testing",
        allow_bucket_creation=True,
    )


def _stage(store: ArtifactStore, payload: dict[str, bytes]) -> object:
    out = store.new_output(Statistics, "StatisticsGen", "statistics")
    for rel, data in payload.items():
        (out.path / rel).parent.mkdir(parents=True, exist_ok=True)
        (out.path / rel).write_bytes(data)
    out.properties["split_names"] = ["train"]
    return out


def test_commit_and_load_a_multipart_artifact(bucket: str) -> None:
    store = ArtifactStore(f"{bucket}/store")
    big = os.urandom(23 << 20)  # several multipart parts (pyarrow uploads 10 MiB parts)
    payload = {"train/statistics.json": b'{"num_rows": 3}', "sketch.bin": big}
    art = store.commit(_stage(store, payload), producer={"component": "StatisticsGen"})

    assert art.uri.startswith(f"{bucket}/store/StatisticsGen/statistics/")
    loaded = store.load(art.uri, Statistics)
    assert loaded == art and loaded.split("train") == {"num_rows": 3}
    assert loaded.list_files() == ["sketch.bin", "train/statistics.json"]
    fs, path = pafs.FileSystem.from_uri(art.file("sketch.bin"))
    with fs.open_input_stream(path) as f:
        assert f.read() == big
    meta = json.loads(_fs().open_input_stream(art.uri[5:] + "/artifact.json").read())
    assert meta["manifest"]["sketch.bin"]["size"] == len(big)
    # Content-addressed: committing the same content again gives the same artifact.
    assert store.commit(_stage(store, payload)) == art


def test_tampered_or_incomplete_artifacts_are_refused(bucket: str) -> None:
    store = ArtifactStore(f"{bucket}/store")
    art = store.commit(_stage(store, {"train/statistics.json": b'{"num_rows": 3}'}))
    fs, key = _fs(), art.uri[len("s3://") :]

    # Same size, other bytes: only the hash tells, and the error names the file.
    with fs.open_output_stream(f"{key}/train/statistics.json") as f:
        f.write(b'{"num_rows": 4}')
    with pytest.raises(ArtifactCorruptError, match=r"file train/statistics\.json differs"):
        store.load(art.uri)
    with pytest.raises(ArtifactCorruptError, match=r"train/statistics\.json"):
        art.verify()

    with fs.open_output_stream(f"{key}/extra.txt") as f:
        f.write(b"x")
    with pytest.raises(ArtifactCorruptError, match=r"file extra\.txt is not in artifact\.json"):
        store.load(art.uri, verify=False)

    fs.delete_file(f"{key}/artifact.json")
    with pytest.raises(ArtifactCorruptError, match="incomplete"):
        store.load(art.uri)


def test_a_root_with_uri_options_is_refused(s3: S3Server) -> None:
    # pyarrow would accept it, but the options are lost from the artifacts' own URIs.
    root = f"s3://bucket/prefix?endpoint_override={s3.endpoint[7:]}&scheme=http"
    with pytest.raises(ArtifactError, match="AWS_ENDPOINT_URL"):
        ArtifactStore(root)


@pytest.mark.slow
def test_demo_data_half_on_s3_then_cached(bucket: str, tmp_path: Path) -> None:
    from jaxtx.pipelines.demo import create_pipeline, ensure_demo_data

    home = tmp_path / "home"
    data = ensure_demo_data(tmp_path / "demo-data", rows=2000)
    pipeline = create_pipeline(str(data), home=str(home), train_model=False)
    pipeline.artifact_root = f"{bucket}/demo"

    first = pipeline.run()
    assert len(first.executed_nodes) == 9 and not first.cached_nodes
    outputs = {f"{n}.{k}": a for n, r in first.nodes.items() for k, a in r.outputs.items()}
    assert all(a.uri.startswith(f"{bucket}/demo/") for a in outputs.values())
    assert not (home / "artifacts").exists()  # nothing went to the local store

    examples = outputs["ExampleGen.examples"]
    assert isinstance(examples, Examples)
    train = examples.read("train")  # pyarrow reads the Parquet shards from S3
    stats = outputs["StatisticsGen.statistics"]
    assert (
        stats.split("train")["num_rows"]
        == train.num_rows
        == examples.properties["split_counts"]["train"]
    )
    anomalies = outputs["ExampleValidator.anomalies"].read_json("anomalies.json")
    assert {a["severity"] for a in anomalies} <= {"warn"}
    assert any("previous span" in a["description"] for a in anomalies)

    # Second run: every node is a cache hit, resolved against the artifacts on S3.
    second = pipeline.run()
    assert not second.executed_nodes and len(second.cached_nodes) == 9
    again = {f"{n}.{k}": a for n, r in second.nodes.items() for k, a in r.outputs.items()}
    assert again == outputs
