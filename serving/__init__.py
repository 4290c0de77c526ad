"""jaxtx.serving: load exported jaxtx models and serve them over HTTP.

`jaxtx.serving.runtime` loads and calls a model (numpy and jax only);
`jaxtx.serving.server` serves a model repository over TF Serving's REST API
and the Open Inference Protocol v2. Names are imported on first use, so that
``import jaxtx.serving`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BatchingConfig",
    "InputError",
    "LoadedModel",
    "ModelLoadError",
    "ModelRepository",
    "ServerConfig",
    "Signature",
    "VersionPolicy",
    "create_app",
    "serve",
]

_WHERE = {
    "BatchingConfig": "batching",
    "InputError": "runtime",
    "LoadedModel": "runtime",
    "ModelLoadError": "runtime",
    "Signature": "runtime",
    "ModelRepository": "repository",
    "VersionPolicy": "repository",
    "ServerConfig": "app",
    "create_app": "app",
    "serve": "server",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxtx.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
