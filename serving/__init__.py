"""jaxtx.serving: load exported jaxtx models and serve them over HTTP.

`jaxtx.serving.runtime` loads and calls a model (numpy and jax only);
`jaxtx.serving.repository` loads, swaps and unloads versions without dropping
a request; `jaxtx.serving.server` serves a repository over TF Serving's REST
API and the Open Inference Protocol v2 (HTTP: `app`, `tf_rest`, `v2`,
`transport`; gRPC: `grpc_server`); `jaxtx.serving.cli` is the command line
``jaxtx serve`` and ``python -m jaxtx.serving`` share. Names are imported on
first use, so that ``import jaxtx.serving`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BatchingConfig",
    "EdgeLimits",
    "InputError",
    "LoadedModel",
    "ModelLoadError",
    "ModelRepository",
    "ServerConfig",
    "Signature",
    "VersionPolicy",
    "add_serve_arguments",
    "create_app",
    "serve",
    "serve_from_args",
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
    "EdgeLimits": "transport",
    "add_serve_arguments": "cli",
    "serve_from_args": "cli",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxtx.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
