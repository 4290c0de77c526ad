"""Availability through every repository transition, measured under load over real HTTP.

Each test keeps several clients sending v2 infer requests (over gRPC too for a
rollback and a delete) while the model's files change, waits (bounded polling of the repository) for the transition to
finish, and asserts that not one request got a non-2xx answer.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _serving_load import Load
from _serving_server import RunningServer

from jaxtx.serving.batching import BatchingConfig
from jaxtx.serving.server import ServerConfig

StartServer = Callable[..., RunningServer]
CopyModel = Callable[[Path, str, int], Path]
THREADS = 4


def _config(base: Path, **kw: object) -> ServerConfig:
    return ServerConfig(
        base_dir=base,
        poll_interval_s=0.05,
        batching=BatchingConfig(max_batch_size=8, max_wait_ms=1.0),
        **kw,  # type: ignore[arg-type]
    )


def _until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``check`` until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout} s: {what}")
        time.sleep(0.02)


def _serving(srv: RunningServer, versions: list[int]) -> Callable[[], bool]:
    return lambda: srv.repository.serving_versions("logistic") == versions


def _finish(load: Load) -> None:
    load.wait_for(4 * THREADS)  # requests answered after the transition
    load.stop()
    print(
        f"requests {load.total}, by status {dict(load.statuses)}, by version {dict(load.versions)}"
    )
    assert load.non_2xx() == 0, (dict(load.statuses), load.failures[:5])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("how", ["rename_aside", "delete"])
def test_rollback_and_delete_of_the_served_version_under_load(
    tmp_path: Path, copy_model: CopyModel, start_server: StartServer, how: str, protocol: str
) -> None:
    copy_model(tmp_path, "logistic", 1)
    copy_model(tmp_path, "logistic", 2)
    grpc = {"grpc_port": 0} if protocol == "grpc" else {}
    srv = start_server(_config(tmp_path, **grpc))
    _until(_serving(srv, [2]), "version 2 serving")
    port = srv.app.state.grpc_port if grpc else None
    load = Load(srv.url, threads=THREADS, grpc_port=port)
    load.wait_for(4 * THREADS)
    served = tmp_path / "logistic" / "2"
    if how == "delete":
        shutil.rmtree(served)
    else:
        served.rename(tmp_path / "logistic" / ".2-rolled-back")
    _until(_serving(srv, [1]), "version 1 serving after the rollback")
    _finish(load)
    assert load.versions["2"] > 0 and load.versions["1"] > 0


def test_model_folder_gone_for_5_seconds_under_load(
    tmp_path: Path,
    copy_model: CopyModel,
    start_server: StartServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    copy_model(tmp_path, "logistic", 1)
    srv = start_server(_config(tmp_path))
    load = Load(srv.url, threads=THREADS)
    load.wait_for(4 * THREADS)
    caplog.set_level(logging.INFO, logger="jaxtx.serving.repository")
    model_dir, away = tmp_path / "logistic", tmp_path / ".logistic-away"
    model_dir.rename(away)
    _until(lambda: "logistic" in srv.repository.troubled_models, "the scan noticing")
    gone_until = time.monotonic() + 5.0  # the fault lasts 5 s
    while time.monotonic() < gone_until:
        load.wait_for(THREADS, timeout=gone_until - time.monotonic())
    away.rename(model_dir)
    _until(lambda: not srv.repository.troubled_models, "the scan recovering")
    _finish(load)
    warnings = [r for r in caplog.records if "still serving" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert srv.metric("jaxtx_serving_repository_scan_errors_total") >= 1


def test_corrupt_new_version_never_displaces_the_good_one_under_load(
    tmp_path: Path, copy_model: CopyModel, start_server: StartServer
) -> None:
    copy_model(tmp_path, "logistic", 1)
    srv = start_server(_config(tmp_path))
    load = Load(srv.url, threads=THREADS)
    load.wait_for(4 * THREADS)
    staging = tmp_path / "logistic" / ".staging"
    shutil.copytree(tmp_path / "logistic" / "1", staging)
    export = staging / "predict.jaxexport"
    export.write_bytes(export.read_bytes()[:100])  # truncated
    staging.rename(tmp_path / "logistic" / "2")

    def rejected() -> bool:
        status = {s.version: s for s in srv.repository.statuses("logistic")}
        return 2 in status and status[2].state == "END" and bool(status[2].error)

    _until(rejected, "version 2 rejected")
    _finish(load)
    assert srv.repository.serving_versions("logistic") == [1]
    assert set(load.versions) == {"1"}


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO])
def test_read_errors_in_a_scan_are_transient_under_load(
    tmp_path: Path,
    copy_model: CopyModel,
    start_server: StartServer,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    copy_model(tmp_path, "logistic", 1)
    srv = start_server(_config(tmp_path))
    load = Load(srv.url, threads=THREADS)
    load.wait_for(4 * THREADS)
    model_dir = tmp_path / "logistic"
    # Root reads every directory whatever its mode, and EIO cannot be caused
    # on purpose: inject the error into listing this one directory.
    real_iterdir = Path.iterdir

    def failing_iterdir(self: Path):  # type: ignore[no-untyped-def]
        if self == model_dir:
            raise OSError(code, os.strerror(code), str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", failing_iterdir)
    _until(lambda: "logistic" in srv.repository.troubled_models, "the scan noticing")
    load.wait_for(4 * THREADS)
    monkeypatch.setattr(Path, "iterdir", real_iterdir)
    _until(lambda: not srv.repository.troubled_models, "the scan recovering")
    _finish(load)
    assert srv.repository.serving_versions("logistic") == [1]


def test_a_model_gone_past_the_grace_period_unloads(
    tmp_path: Path, copy_model: CopyModel, start_server: StartServer
) -> None:
    copy_model(tmp_path, "logistic", 1)
    copy_model(tmp_path, "vector", 1)
    srv = start_server(_config(tmp_path, removal_grace_s=0.3))
    shutil.rmtree(tmp_path / "vector")
    _until(lambda: not srv.repository.has_model("vector"), "vector unloaded")
    r = srv.client.get("/v2/models/vector")
    assert r.status_code == 404
