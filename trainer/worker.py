"""One training process: ``python -m jaxtx.trainer.worker package.module:function [options]``.

It joins the other processes (:func:`jaxtx.trainer.distributed.initialize`),
imports ``function`` and calls it with the keyword arguments pickled in
``--kwargs``; process 0 pickles the return value to ``--result``. Options
not given come from ``JAXTX_COORDINATOR_ADDRESS``, ``JAXTX_NUM_PROCESSES``
and ``JAXTX_PROCESS_ID`` (or JAX's cluster detection). Exit status: 0 when
the function returned, 1 when it raised (the traceback goes to stderr).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ._launch import ENV_PARENT_PID


def _die_with_parent() -> None:
    """Be killed when the launching process dies (Linux), so no training process is orphaned."""
    parent = os.environ.get(ENV_PARENT_PID)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL))
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(1)


def resolve(target: str) -> Callable[..., Any]:
    """The function named ``"package.module:function"``."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"target must be 'module:function', got {target!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one training process; see the module docstring.

    Args:
      argv: the command-line arguments (default ``sys.argv[1:]``).

    Returns:
      The exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m jaxtx.trainer.worker")
    parser.add_argument("target", help="package.module:function")
    parser.add_argument("--kwargs", help="cloudpickle file with the keyword arguments")
    parser.add_argument("--result", help="where process 0 pickles the return value")
    parser.add_argument("--coordinator", help="host:port of process 0 (coordinator)")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--cpu-collectives", default="gloo", choices=("gloo", "mpi"))
    args = parser.parse_args(argv)
    _die_with_parent()

    from . import distributed

    distributed.initialize(
        args.coordinator, args.num_processes, args.process_id, cpu_collectives=args.cpu_collectives
    )
    # JAX's preemption service catches SIGTERM; a launcher's SIGTERM should end the process
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import cloudpickle

        kwargs: dict[str, Any] = {}
        if args.kwargs:
            with open(args.kwargs, "rb") as f:
                kwargs = cloudpickle.load(f)
        result = resolve(args.target)(**kwargs)
        if args.result and distributed.is_primary():
            tmp = f"{args.result}.tmp"
            with open(tmp, "wb") as f:
                cloudpickle.dump(distributed.host_copy(result), f)
            os.replace(tmp, args.result)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)  # do not wait in jax.distributed's shutdown for processes that went away
    import jax

    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
