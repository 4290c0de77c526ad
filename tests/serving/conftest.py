"""Fixtures for the serving tests: exported test models and a real uvicorn server."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _serving_models import write_logistic_model, write_vector_model
from _serving_server import RunningServer

from jaxtx.serving.server import ServerConfig


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported models written once: ``logistic`` versions 1-3 and ``vector`` version 1."""
    base = tmp_path_factory.mktemp("model-cache")
    for version in (1, 2, 3):
        write_logistic_model(base / "logistic", version)
    write_vector_model(base / "vector", 1)
    return base


@pytest.fixture
def copy_model(model_cache: Path) -> Callable[[Path, str, int], Path]:
    """Copy a cached model version to ``<base>/<model>/<version>`` (atomically)."""
    import os
    import shutil
    import uuid

    def copy(base: Path, model: str, version: int) -> Path:
        src = model_cache / model / str(version)
        final = base / model / str(version)
        tmp = base / model / f".tmp-{uuid.uuid4().hex}"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, tmp)
        os.replace(tmp, final)
        return final

    return copy


@pytest.fixture
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """Start servers (stopped at the end of the test): ``start_server(config, ready=True)``."""
    import gc

    servers: list[RunningServer] = []

    def start(config: ServerConfig, ready: bool = True, freeze_gc: bool = False) -> RunningServer:
        server = RunningServer(config, freeze_gc=freeze_gc)
        servers.append(server)
        if ready:
            server.wait_ready()
        else:
            server.wait_started()
        return server

    yield start
    for server in servers:
        server.stop()
    gc.unfreeze()
