"""Run the model server: `serve`, and the command line both serve entry points share.

The application itself is in `jaxtx.serving.app` (routing, limits), the
protocols in `jaxtx.serving.tf_rest` and `jaxtx.serving.v2`, uvicorn's
write-coalescing protocol in `jaxtx.serving.transport`. `serve` runs uvicorn
with httptools and uvloop when they are installed.

``jaxtx serve`` and ``python -m jaxtx.serving`` parse the same arguments:
`add_serve_arguments` adds them to a parser and `serve_from_args` serves
(both in `jaxtx.serving.cli`, re-exported here).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from .app import DEFAULT_MAX_BODY_BYTES, LOOPBACK_HOSTS, ServerConfig, create_app
from .cli import add_serve_arguments, config_from_args, serve_from_args
from .transport import http_protocol, installed

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ServerConfig",
    "add_serve_arguments",
    "config_from_args",
    "create_app",
    "serve",
    "serve_from_args",
    "uvicorn_options",
]

_log = logging.getLogger(__name__)
_http_protocol = http_protocol  # the name the tests and older callers use


def serve(
    base_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8501,
    *,
    config: ServerConfig | None = None,
    log_level: str = "info",
    **overrides: Any,
) -> None:
    """Serve the models under ``base_dir`` until interrupted.

    Args:
        base_dir: Model repository root, ``<base>/<model>/<version>/``.
        host: Address to bind; loopback by default. The server has no
            authentication: put it behind a proxy that has before binding
            anything else.
        port: TCP port.
        config: Settings (``base_dir`` and ``overrides`` replace its fields).
        log_level: Uvicorn log level.
        **overrides: `ServerConfig` fields, e.g. ``batching=BatchingConfig(enabled=False)``.
    """
    import uvicorn

    cfg = replace(config or ServerConfig(base_dir=base_dir), base_dir=base_dir, **overrides)
    if not _is_loopback(host):
        _log.warning(
            "binding %s: the server has no authentication; anyone who can reach it can query "
            "the models",
            host,
        )
        if cfg.allowed_hosts == LOOPBACK_HOSTS:
            cfg = replace(cfg, allowed_hosts=None)
    app = create_app(cfg)
    uvicorn.run(app, host=host, port=port, log_level=log_level, **uvicorn_options(app))


def uvicorn_options(app: Any) -> dict[str, Any]:
    """Uvicorn settings for an application from `create_app` (protocol, loop, timeouts).

    Args:
        app: The application (its ``state.config`` and ``state.metrics`` are read).

    Returns:
        Keyword arguments for ``uvicorn.run`` or ``uvicorn.Config``.
    """
    config: ServerConfig = app.state.config
    metrics = app.state.metrics
    return {
        # The C HTTP parser and event loop when installed: several times the
        # requests per second of the pure-Python h11 parser and asyncio loop.
        "http": http_protocol(
            "httptools" if installed("httptools") else "h11",
            config.edge,
            on_reject=metrics.rejected_connections.inc,
        ),
        "loop": "uvloop" if installed("uvloop") else "asyncio",
        "timeout_keep_alive": config.keep_alive_timeout_s,
        "h11_max_incomplete_event_size": config.edge.max_header_bytes,
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
    }


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"
