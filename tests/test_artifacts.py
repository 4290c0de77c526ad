"""Artifacts: content fingerprints, atomic commits, loud failures on damage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jaxtx import Artifact, ArtifactCorruptError, ArtifactStore, Output, Statistics, component
from jaxtx.components import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactTypeError,
    Examples,
    load_artifact,
)


class Blob(Artifact):
    """A test artifact type."""


def _commit(store: ArtifactStore, text: str = "hello", **props) -> Blob:
    out = store.new_output(Blob, "Maker", "blob")
    (out.path / "sub").mkdir()
    (out.path / "sub" / "data.txt").write_text(text)
    out.properties.update(props)
    return store.commit(out, producer={"component": "Maker"})


def test_commit_and_load_round_trip(store: ArtifactStore) -> None:
    art = _commit(store, span=3)
    assert isinstance(art, Blob)
    assert (Path(art.uri) / "artifact.json").exists()
    loaded = load_artifact(art.uri)
    assert loaded == art
    assert loaded.properties == {"span": 3}
    assert loaded.producer["component"] == "Maker"
    assert loaded.list_files() == ["sub/data.txt"]
    # Nothing is left in staging after a commit.
    assert list((Path(store.root) / ".staging").iterdir()) == []


def test_fingerprint_is_content_addressed(store: ArtifactStore) -> None:
    a = _commit(store, "same")
    b = _commit(store, "same")
    c = _commit(store, "different")
    assert a.fingerprint == b.fingerprint and a.uri == b.uri
    assert c.fingerprint != a.fingerprint and c.uri != a.uri
    # Properties are part of what an artifact is.
    assert _commit(store, "same", span=1).fingerprint != a.fingerprint


def test_tampered_file_fails_loudly_naming_the_file(store: ArtifactStore) -> None:
    art = _commit(store, "original")
    (Path(art.uri) / "sub" / "data.txt").write_text("originaL")  # same size, other content
    with pytest.raises(ArtifactCorruptError, match="sub/data.txt"):
        load_artifact(art.uri)
    # A size-only check would not see it; the full check is the default.
    load_artifact(art.uri, verify=False)


def test_extra_and_missing_files_are_detected(store: ArtifactStore) -> None:
    art = _commit(store, "x")
    (Path(art.uri) / "intruder.txt").write_text("!")
    with pytest.raises(ArtifactCorruptError, match="intruder.txt"):
        load_artifact(art.uri)
    os.remove(Path(art.uri) / "intruder.txt")
    os.remove(Path(art.uri) / "sub" / "data.txt")
    with pytest.raises(ArtifactCorruptError, match="missing"):
        load_artifact(art.uri)


def test_edited_metadata_is_detected(store: ArtifactStore) -> None:
    art = _commit(store, "x", span=1)
    meta_path = Path(art.uri) / "artifact.json"
    meta = json.loads(meta_path.read_text())
    meta["properties"]["span"] = 2
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactCorruptError, match="fingerprint"):
        load_artifact(art.uri)


def test_half_written_directory_is_not_trusted(tmp_path: Path) -> None:
    half = tmp_path / "half"
    (half / "data").mkdir(parents=True)
    (half / "data" / "part-0.parquet").write_bytes(b"PAR1")
    with pytest.raises(ArtifactCorruptError, match="incomplete"):
        load_artifact(str(half))
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        load_artifact(str(tmp_path / "nothing"))


def test_wrong_type_is_rejected(store: ArtifactStore) -> None:
    art = _commit(store)
    with pytest.raises(ArtifactTypeError, match="holds a Blob artifact, but a Statistics"):
        load_artifact(art.uri, Statistics)


def test_crash_mid_component_leaves_no_artifact(store: ArtifactStore) -> None:
    @component
    def Crashes(out: Output[Blob]) -> None:
        (out.path / "partial.txt").write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        Crashes(store=store)
    assert not (Path(store.root) / "Crashes").exists()
    assert list((Path(store.root) / ".staging").iterdir()) == []


def test_properties_must_be_json(store: ArtifactStore) -> None:
    out = store.new_output(Blob, "Maker", "blob")
    out.properties["bad"] = object()
    with pytest.raises(ArtifactError, match="JSON-serializable"):
        store.commit(out)


def test_component_may_not_write_artifact_json(store: ArtifactStore) -> None:
    out = store.new_output(Blob, "Maker", "blob")
    (out.path / "artifact.json").write_text("{}")
    with pytest.raises(ArtifactError, match="may not write artifact.json"):
        store.commit(out)


def test_examples_split_helpers(store: ArtifactStore) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = store.new_output(Examples, "Gen", "examples")
    for split, n in (("train", 4), ("eval", 2)):
        d = out.path / "data" / split
        d.mkdir(parents=True)
        pq.write_table(pa.table({"x": list(range(n))}), d / "part-00000-of-00001.parquet")
    out.properties["split_names"] = ["train", "eval"]
    ex = store.commit(out)
    assert ex.read("train").num_rows == 4
    assert len(ex.files("eval")) == 1
    with pytest.raises(KeyError, match="no split 'test'"):
        ex.files("test")


def test_store_accepts_a_pyarrow_filesystem_uri(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}/uri-store")
    art = _commit(store, "via uri")
    assert art.uri.startswith(str(tmp_path / "uri-store"))
    assert load_artifact(f"file://{art.uri}").fingerprint == art.fingerprint


# -- the public API ------------------------------------------------------------------------------------
BUILTIN_COMPONENTS = [
    "ExampleGen",
    "StatisticsGen",
    "SchemaGen",
    "ImportSchema",
    "ExampleValidator",
    "Transform",
    "Trainer",
    "Evaluator",
    "InfraValidator",
    "Pusher",
    "BulkInferrer",
    "Tuner",
]
ARTIFACT_TYPES = [
    "Anomalies",
    "Examples",
    "Hyperparameters",
    "InferenceResult",
    "InfraBlessing",
    "Model",
    "ModelBlessing",
    "ModelEvaluation",
    "PushedModel",
    "Schema",
    "Statistics",
    "TransformGraph",
]


def _fresh(code: str) -> str:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


def test_public_api_lists() -> None:
    import jaxtx
    import jaxtx.components as jc
    import jaxtx.validation as jv
    from jaxtx.components import Component

    for name in BUILTIN_COMPONENTS:
        assert name in jc.__all__ and isinstance(getattr(jc, name), Component), name
    for name in ARTIFACT_TYPES:
        assert name in jaxtx.__all__ and name in jc.__all__, name
        assert getattr(jaxtx, name) is getattr(jc, name)
        assert issubclass(getattr(jc, name), Artifact)
    assert {t.TYPE_NAME for t in jc.ARTIFACT_TYPES} == set(ARTIFACT_TYPES)
    for module in (jaxtx, jc, jv):
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, (module.__name__, missing)
    assert "SchemaSpec" in jv.__all__ and "Schema" not in jv.__all__
    assert jv.SchemaSpec is not jc.Schema


def test_every_artifact_type_is_registered_without_side_effect_imports(
    store: ArtifactStore,
) -> None:
    from jaxtx.components import InferenceResult

    out = store.new_output(InferenceResult, "BulkInferrer", "inference_result")
    (out.path / "x.txt").write_text("1")
    uri = store.commit(out).uri
    code = (
        "import sys\n"
        "from jaxtx.components import artifact_type, load_artifact\n"
        f"names = {ARTIFACT_TYPES!r}\n"
        "assert all(artifact_type(n).TYPE_NAME == n for n in names)\n"
        f"art = load_artifact({uri!r})\n"
        "assert 'jaxtx.components.bulk_inferrer' not in sys.modules\n"
        "assert 'apache_beam' not in sys.modules and 'jax' not in sys.modules\n"
        "print(type(art).__name__)\n"
    )
    assert _fresh(code) == "InferenceResult"
