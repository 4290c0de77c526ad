"""Command line: ``python -m jaxtx.serving --model-base-path DIR [--port 8501]``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from .batching import BatchingConfig
from .repository import VersionPolicy
from .server import DEFAULT_MAX_BODY_BYTES, ServerConfig, serve

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxtx.serving",
        description="Serve exported jaxtx models over TF Serving REST and the v2 protocol.",
    )
    p.add_argument("--model-base-path", required=True, help="<base> of <base>/<model>/<version>/")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument(
        "--version-policy",
        default="latest",
        type=VersionPolicy.parse,
        help="latest[:N] | all | specific:1,2 (default: latest)",
    )
    p.add_argument("--poll-interval", type=float, default=2.0, help="seconds between scans")
    p.add_argument("--no-batching", action="store_true", help="one model call per request")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=0.0,
        help="longest a batch waits to fill (default 0: start when a worker is free)",
    )
    p.add_argument("--batch-threads", type=int, default=1)
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--log-level", default="info")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and serve until interrupted.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        base_dir=args.model_base_path,
        version_policy=args.version_policy,
        poll_interval_s=args.poll_interval,
        batching=BatchingConfig(
            enabled=not args.no_batching,
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.batch_timeout_ms,
            num_threads=args.batch_threads,
        ),
        max_body_bytes=args.max_body_bytes,
    )
    serve(args.model_base_path, args.host, args.port, config=config, log_level=args.log_level)


if __name__ == "__main__":
    main()
