"""The command line both serve entry points share: ``jaxtx serve`` and ``python -m jaxtx.serving``.

Light to import (the server is imported when `serve_from_args` runs), so
that building the ``jaxtx`` parser stays fast.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import ServerConfig

__all__ = ["add_serve_arguments", "config_from_args", "serve_from_args"]


def _policy(text: str) -> Any:
    from .repository import VersionPolicy

    return VersionPolicy.parse(text)


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the server's arguments to ``parser`` (both serve entry points call this).

    The model base path is given either as the first positional argument or
    as ``--model-base-path``.

    Args:
        parser: The parser (or sub-command parser) to extend.

    Returns:
        ``parser``.
    """
    p = parser
    p.add_argument(
        "base", nargs="?", metavar="MODEL_BASE_PATH", help="<base> of <base>/<model>/<version>/"
    )
    p.add_argument("--model-base-path", dest="model_base_path", help="the same, as an option")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8501, help="HTTP port (TF REST and v2)")
    p.add_argument(
        "--grpc-port",
        type=int,
        help="also serve the v2 protocol over gRPC on this port (e.g. 8001; default: off)",
    )
    p.add_argument("--grpc-host", default="127.0.0.1", help="address the gRPC port binds")
    p.add_argument(
        "--version-policy",
        default="latest",
        type=_policy,
        help="latest[:N] | all | specific:1,2 (default: latest)",
    )
    p.add_argument("--poll-interval", type=float, default=2.0, help="seconds between scans")
    p.add_argument("--no-batching", action="store_true", help="one model call per request")
    p.add_argument("--max-batch-size", type=int, default=32, help="most rows in one model call")
    p.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=0.0,
        help="longest a batch waits to fill (default 0: start when a worker is free)",
    )
    p.add_argument("--batch-threads", type=int, default=1, help="threads running model calls")
    p.add_argument(
        "--batch-inline-ms",
        type=float,
        default=1.0,
        help="run a batch on the event loop when the workers are idle and the model's last "
        "call at that size took at most this long (default 1; 0: always on a worker)",
    )
    p.add_argument(
        "--max-body-bytes", type=int, help="largest request body accepted (default 8 MiB)"
    )
    p.add_argument("--log-level", default="info", help="debug | info | warning | error")
    return p


def _base_path(args: argparse.Namespace) -> Path:
    given = [v for v in (args.base, args.model_base_path) if v]
    if not given:
        raise ValueError("no model base path: pass MODEL_BASE_PATH or --model-base-path")
    if len(given) == 2 and given[0] != given[1]:
        raise ValueError(f"two model base paths given ({given[0]} and {given[1]}); pass one")
    base = Path(given[0])
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such directory (expected <base>/<model>/<version>/)")
    return base


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The `ServerConfig` that parsed arguments describe.

    Args:
        args: Arguments parsed by a parser that `add_serve_arguments` extended.

    Returns:
        The settings.

    Raises:
        ValueError: No base path, or two different ones.
        FileNotFoundError: The base path is not a directory.
    """
    from .app import ServerConfig
    from .batching import BatchingConfig

    extra: dict[str, Any] = {}
    if args.max_body_bytes is not None:
        extra["max_body_bytes"] = args.max_body_bytes
    return ServerConfig(
        base_dir=_base_path(args),
        version_policy=args.version_policy,
        poll_interval_s=args.poll_interval,
        batching=BatchingConfig(
            enabled=not args.no_batching,
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.batch_timeout_ms,
            num_threads=args.batch_threads,
            inline_max_ms=args.batch_inline_ms,
        ),
        grpc_port=args.grpc_port,
        grpc_host=args.grpc_host,
        **extra,
    )


def serve_from_args(args: argparse.Namespace) -> None:
    """Configure logging and serve until interrupted, as the parsed arguments say.

    Args:
        args: Arguments parsed by a parser that `add_serve_arguments` extended.
    """
    from .server import serve

    config = config_from_args(args)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(config.base_dir, args.host, args.port, config=config, log_level=args.log_level)
