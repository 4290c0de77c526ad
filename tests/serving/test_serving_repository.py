"""ModelRepository: version policies, labels, swaps, failed versions, unloading."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _serving_models import expected_outputs
from _serving_server import metric_value

from jaxtx.serving.metrics import ServingMetrics
from jaxtx.serving.repository import (
    ModelNotFoundError,
    ModelNotReadyError,
    ModelRepository,
    VersionPolicy,
)

CopyModel = Callable[[Path, str, int], Path]
ROW = {"x1": [1.0], "x2": [2.0], "color": ["green"]}


def _logit(repo: ModelRepository, **kwargs: object) -> float:
    return float(repo.resolve("logistic", **kwargs).predict(ROW)["logits"][0])


def _want(version: int) -> float:
    return float(expected_outputs([1.0], [2.0], ["green"], version)["logits"][0])


def test_policy_selection() -> None:
    assert VersionPolicy.latest().select([1, 3, 2]) == {3}
    assert VersionPolicy.latest(2).select([1, 3, 2]) == {2, 3}
    assert VersionPolicy.all().select([1, 3]) == {1, 3}
    assert VersionPolicy.specific(1, 4).select([1, 2, 3]) == {1}
    assert VersionPolicy.parse("latest:2") == VersionPolicy.latest(2)
    assert VersionPolicy.parse("specific:1,3") == VersionPolicy.specific(1, 3)
    with pytest.raises(ValueError, match="latest"):
        VersionPolicy.parse("newest")


def test_latest_serves_highest_and_swaps(tmp_path: Path, copy_model: CopyModel) -> None:
    copy_model(tmp_path, "logistic", 1)
    repo = ModelRepository(tmp_path)
    assert not repo.ready
    repo.poll_once()
    assert repo.ready
    assert repo.serving_versions("logistic") == [1]
    old = repo.resolve("logistic")
    copy_model(tmp_path, "logistic", 2)
    repo.poll_once()
    assert repo.serving_versions("logistic") == [2]
    assert _logit(repo) == pytest.approx(_want(2))
    # A reference taken before the swap still works.
    assert float(old.predict(ROW)["logits"][0]) == pytest.approx(_want(1))
    states = {s.version: s.state for s in repo.statuses("logistic")}
    assert states == {2: "AVAILABLE", 1: "END"}
    with pytest.raises(ModelNotFoundError, match="serving versions: \\[2\\]"):
        repo.resolve("logistic", version=1)


def test_all_and_specific_policies(tmp_path: Path, copy_model: CopyModel) -> None:
    for v in (1, 2, 3):
        copy_model(tmp_path, "logistic", v)
    repo = ModelRepository(
        tmp_path,
        policy=VersionPolicy.all(),
        policies={"vector": VersionPolicy.latest()},
    )
    repo.poll_once()
    assert repo.serving_versions("logistic") == [1, 2, 3]
    for v in (1, 2, 3):
        assert _logit(repo, version=v) == pytest.approx(_want(v))
    assert repo.resolve("logistic").version == 3

    repo2 = ModelRepository(tmp_path, policies={"logistic": VersionPolicy.specific(1, 3)})
    repo2.poll_once()
    assert repo2.serving_versions("logistic") == [1, 3]


def test_labels_from_file_and_config(tmp_path: Path, copy_model: CopyModel) -> None:
    for v in (1, 2):
        copy_model(tmp_path, "logistic", v)
    (tmp_path / "logistic" / "labels.json").write_text(json.dumps({"stable": 1, "canary": 2}))
    repo = ModelRepository(
        tmp_path, policy=VersionPolicy.latest(2), labels={"logistic": {"canary": 1, "qa": 2}}
    )
    repo.poll_once()
    assert repo.labels("logistic") == {"stable": 1, "canary": 1, "qa": 2}
    assert _logit(repo, label="stable") == pytest.approx(_want(1))
    assert _logit(repo, label="qa") == pytest.approx(_want(2))
    assert [s.version for s in repo.statuses("logistic", label="qa")] == [2]
    with pytest.raises(ModelNotFoundError, match="no label 'prod'"):
        repo.resolve("logistic", label="prod")
    # Relabel on disk; an invalid file keeps the previous labels.
    (tmp_path / "logistic" / "labels.json").write_text(json.dumps({"stable": 2}))
    repo.poll_once()
    assert repo.labels("logistic")["stable"] == 2
    (tmp_path / "logistic" / "labels.json").write_text("{broken")
    repo.poll_once()
    assert repo.labels("logistic")["stable"] == 2


def test_failed_version_never_replaces_good_one(tmp_path: Path, copy_model: CopyModel) -> None:
    copy_model(tmp_path, "logistic", 1)
    metrics = ServingMetrics()
    repo = ModelRepository(tmp_path, metrics=metrics)
    repo.poll_once()
    bad = tmp_path / "logistic" / "2"
    shutil.copytree(tmp_path / "logistic" / "1", bad)
    (bad / "predict.jaxexport").write_bytes(b"\x00not an export")
    repo.poll_once()
    repo.poll_once()  # not retried while the files stay the same
    assert repo.serving_versions("logistic") == [1]
    assert _logit(repo) == pytest.approx(_want(1))
    status = {s.version: s for s in repo.statuses("logistic")}
    assert status[2].state == "END"
    assert "predict.jaxexport" in status[2].error
    assert status[1].state == "AVAILABLE"
    text = metrics.render().decode()
    assert metric_value(text, "jaxtx_serving_model_load_failures_total", version="2") == 1.0
    assert metric_value(text, "jaxtx_serving_loaded_versions", model="logistic") == 1.0
    with pytest.raises(ModelNotFoundError, match="not a jax.export"):
        repo.resolve("logistic", version=2)
    # Fixed files are picked up on the next scan.
    shutil.copy(tmp_path / "logistic" / "1" / "predict.jaxexport", bad / "predict.jaxexport")
    repo.poll_once()
    assert repo.serving_versions("logistic") == [2]


def test_removed_versions_and_models_unload(tmp_path: Path, copy_model: CopyModel) -> None:
    copy_model(tmp_path, "logistic", 1)
    copy_model(tmp_path, "logistic", 2)
    copy_model(tmp_path, "vector", 1)
    repo = ModelRepository(tmp_path, policy=VersionPolicy.all(), removal_grace_s=0)
    repo.poll_once()
    assert repo.model_names() == ["logistic", "vector"]
    shutil.rmtree(tmp_path / "logistic" / "2")
    shutil.rmtree(tmp_path / "vector")
    repo.poll_once()
    assert repo.serving_versions("logistic") == [1]
    assert repo.model_names() == ["logistic"]
    with pytest.raises(ModelNotFoundError, match="model 'vector' not found"):
        repo.resolve("vector")


def test_model_without_versions_is_not_ready(tmp_path: Path) -> None:
    (tmp_path / "empty" / "1").mkdir(parents=True)  # no files yet: not a version
    repo = ModelRepository(tmp_path)
    with pytest.raises(ModelNotReadyError, match="still scanning"):
        repo.resolve("empty")
    repo.poll_once()
    assert not repo.ready
    with pytest.raises(ModelNotReadyError, match="no version serving"):
        repo.resolve("empty")


def test_poller_thread_picks_up_new_versions(tmp_path: Path, copy_model: CopyModel) -> None:
    import time

    copy_model(tmp_path, "logistic", 1)
    repo = ModelRepository(tmp_path, poll_interval_s=0.05)
    repo.start()
    try:
        assert repo.wait_polled(10)
        assert repo.serving_versions("logistic") == [1]
        copy_model(tmp_path, "logistic", 3)
        deadline = time.monotonic() + 10
        while repo.serving_versions("logistic") != [3] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert repo.serving_versions("logistic") == [3]
        assert np.isclose(_logit(repo), _want(3))
    finally:
        repo.stop()


def test_unreadable_model_past_the_grace_period_unloads(
    tmp_path: Path, copy_model: CopyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    copy_model(tmp_path, "logistic", 1)
    repo = ModelRepository(tmp_path, removal_grace_s=0.0)
    repo.poll_once()
    model_dir = tmp_path / "logistic"
    real_iterdir = Path.iterdir

    def failing_iterdir(self: Path):  # type: ignore[no-untyped-def]
        if self == model_dir:
            raise OSError(errno.EIO, "I/O error", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", failing_iterdir)
    repo.poll_once()
    assert repo.serving_versions("logistic") == []
    with pytest.raises(ModelNotReadyError, match="no version serving"):
        repo.resolve("logistic")
    monkeypatch.setattr(Path, "iterdir", real_iterdir)
    repo.poll_once()
    assert repo.serving_versions("logistic") == [1]
