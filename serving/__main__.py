"""Command line: ``python -m jaxtx.serving MODEL_BASE_PATH [--port 8501]`` (as ``jaxtx serve``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .cli import add_serve_arguments, serve_from_args

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The argument parser (the same arguments as ``jaxtx serve``)."""
    return add_serve_arguments(
        argparse.ArgumentParser(
            prog="python -m jaxtx.serving",
            description="Serve exported jaxtx models over TF Serving REST and the v2 protocol.",
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and serve until interrupted.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
    """
    p = parser()
    args = p.parse_args(argv)
    try:
        serve_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))


if __name__ == "__main__":
    main()
