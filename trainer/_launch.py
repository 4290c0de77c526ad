"""Start ``N`` training processes on this machine and supervise them.

Each process runs ``python -m jaxtx.trainer.worker TARGET`` with its process
id, the coordinator address (a free port on 127.0.0.1) and the pickled
keyword arguments; process 0's return value comes back through a file. A
process that fails (an exception, a signal, an exit code other than 0) stops
the others: they get SIGTERM, then SIGKILL after ``stop_grace_s``, and the
launcher raises :class:`WorkerError` naming the process, its exit status and
the last lines of its stderr. Nothing outlives :meth:`Launch.wait`: each
worker leads its own process group, signalled as a whole when it is stopped,
and a worker also dies with the launching process (``PR_SET_PDEATHSIG`` on
Linux).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Launch", "WorkerError", "WorkerFailure", "free_port", "launch", "start"]

WORKER_MODULE = "jaxtx.trainer.worker"
ENV_COORDINATOR = "JAXTX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAXTX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXTX_PROCESS_ID"
ENV_PARENT_PID = "JAXTX_PARENT_PID"
_STDERR_LINES = 20
_POLL_S = 0.05
# Exits seen this close together count as one moment: which watcher thread ran
# first on a busy machine says nothing about which process died first.
_SAME_MOMENT_S = 1.0
_DROPPED_ENV_PREFIXES = ("PYTEST_XDIST_", "PYTEST_CURRENT_TEST")
"""Variables of a pytest-xdist worker that must not reach the training processes."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free on ``host`` (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class WorkerFailure:
    """How one training process ended badly.

    Attributes:
      process_id: its JAX process index.
      pid: its OS process id.
      returncode: its exit status (negative: killed by that signal).
      stderr_tail: the last lines of its stderr.
    """

    process_id: int
    pid: int
    returncode: int
    stderr_tail: str

    def describe(self) -> str:
        """``"process 1 (pid 123) was killed by SIGKILL"`` or ``"... exited with code 1"``."""
        if self.returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                how = f"was killed by signal {-self.returncode}"
        else:
            how = f"exited with code {self.returncode}"
        return f"process {self.process_id} (pid {self.pid}) {how}"


class WorkerError(RuntimeError):
    """A training process failed; the others were stopped.

    Attributes:
      failure: the process that ended first (the others usually fail
        because it went away).
      failures: every process that ended badly, ``failure`` first.
      process_id: ``failure.process_id``.
      returncode: ``failure.returncode``.
    """

    def __init__(self, failures: Sequence[WorkerFailure], count: int, log_dir: str) -> None:
        self.failures = list(failures)
        self.failure = self.failures[0]
        self.process_id = self.failure.process_id
        self.returncode = self.failure.returncode
        tail = self.failure.stderr_tail.strip() or "(no stderr output)"
        others = "; ".join(f.describe() for f in self.failures[1:])
        todo = (
            "Run again with the same checkpoint directory to resume from its last checkpoint."
            if self.returncode < 0
            else "Fix the error above; a rerun with the same checkpoint directory resumes "
            "from its last checkpoint."
        )
        super().__init__(
            f"training {self.failure.describe()} ({count} processes); the others were "
            f"stopped{f' ({others})' if others else ''}. Logs: {log_dir}. Last stderr lines "
            f"of process {self.process_id}:\n{tail}\n{todo}"
        )


class Launch:
    """Training processes started by :func:`start`; :meth:`wait` supervises them.

    Attributes:
      pids: OS process ids, indexed by JAX process id.
      coordinator_address: ``127.0.0.1:<port>``.
      log_dir: holds ``process-<i>.stdout`` / ``.stderr``, the arguments and the result.
    """

    def __init__(
        self,
        procs: list[subprocess.Popen[bytes]],
        coordinator_address: str,
        log_dir: str,
        result_path: Path,
        timeout_s: float | None,
        stop_grace_s: float,
        cleanup: bool,
    ) -> None:
        self._procs = procs
        self.pids = [p.pid for p in procs]
        self.coordinator_address = coordinator_address
        self.log_dir = log_dir
        self._result_path = result_path
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._timeout_s = timeout_s
        self._stop_grace_s = stop_grace_s
        self._cleanup = cleanup
        self._ended: dict[int, float] = {}  # JAX process id -> when its exit was seen
        self._changed = threading.Event()
        for i, p in enumerate(procs):
            threading.Thread(
                target=self._watch, args=(i, p), name=f"jaxtx-launch-{i}", daemon=True
            ).start()

    def _watch(self, i: int, p: subprocess.Popen[bytes]) -> None:
        """Record when process ``i`` ends (a thread blocked in ``wait`` sees it at once)."""
        p.wait()
        self._ended.setdefault(i, time.monotonic())
        self._changed.set()

    def running(self) -> list[int]:
        """JAX process ids of the processes still running."""
        return [i for i, p in enumerate(self._procs) if p.poll() is None]

    def wait(self) -> Any:
        """Wait for every process; return process 0's result.

        Returns:
          What the target returned on process 0 (``None`` if nothing).

        Raises:
          WorkerError: a process failed (the others are stopped first).
          TimeoutError: the processes ran past ``timeout_s`` (they are stopped).
        """
        try:
            while True:
                codes = [p.poll() for p in self._procs]
                bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
                if bad:
                    self.stop()
                    raise self._error(bad)
                if all(c == 0 for c in codes):
                    result = self._result()
                    if self._cleanup:
                        shutil.rmtree(self.log_dir, ignore_errors=True)
                    return result
                if self._deadline is not None and time.monotonic() > self._deadline:
                    left = self.running()
                    self.stop()
                    raise TimeoutError(
                        f"training processes {left} still ran after {self._timeout_s:.0f} s and "
                        f"were stopped; logs: {self.log_dir}"
                    )
                self._changed.wait(timeout=_POLL_S)
                self._changed.clear()
        finally:
            self.stop()

    def _error(self, bad: list[int]) -> WorkerError:
        """The error for failed processes ``bad``: the one that ended first is the cause.

        The others usually fail because it went away; the processes stopped
        by :meth:`stop` are listed after them. Exits seen within
        `_SAME_MOMENT_S` of the first are taken as simultaneous, and among
        them a process killed by a signal comes before one that exited with a
        code (which is what its peers do when it vanishes).
        """
        now = time.monotonic()
        first = min(self._ended.get(i, now) for i in bad)

        def key(i: int) -> tuple[bool, bool, float, int]:
            ended = self._ended.get(i, now)
            return ended - first > _SAME_MOMENT_S, self._procs[i].returncode >= 0, ended, i

        failed = sorted(bad, key=key)
        stopped = [i for i, p in enumerate(self._procs) if i not in bad and p.returncode]
        failures = [
            WorkerFailure(i, self.pids[i], self._procs[i].returncode, self._tail(i))
            for i in failed + stopped
        ]
        return WorkerError(failures, len(self._procs), self.log_dir)

    def _tail(self, i: int) -> str:
        path = Path(self.log_dir) / f"process-{i}.stderr"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_STDERR_LINES:])

    def _result(self) -> Any:
        if not self._result_path.exists():
            return None
        import cloudpickle

        with open(self._result_path, "rb") as f:
            return cloudpickle.load(f)

    def stop(self) -> None:
        """Stop every process still running: SIGTERM, then SIGKILL after the grace period."""
        live = [p for p in self._procs if p.poll() is None]
        for p in live:
            _signal_group(p, signal.SIGTERM)
        end = time.monotonic() + self._stop_grace_s
        for p in live:
            try:
                p.wait(timeout=max(end - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait(timeout=30)


def _signal_group(p: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group that ``p`` leads (it was started in a new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, sig)


def _child_env(
    base: Mapping[str, str], extra: Mapping[str, str] | None, devices: int | None
) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("JAX_PLATFORMS", "cpu")
    if devices is not None:
        flags = [
            f
            for f in env.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")
        ]
        flags.append(f"--xla_force_host_platform_device_count={int(devices)}")
        env["XLA_FLAGS"] = " ".join(flags)
    env.update(extra or {})
    env[ENV_PARENT_PID] = str(os.getpid())
    return env


def start(
    target: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    processes: int = 2,
    devices_per_process: int | None = None,
    timeout_s: float | None = 3600.0,
    stop_grace_s: float = 10.0,
    log_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    python: str | None = None,
) -> Launch:
    """Start ``processes`` training processes running ``target(**kwargs)``.

    Args:
      target: ``"package.module:function"``, importable in the workers.
      kwargs: keyword arguments for ``target`` (pickled with cloudpickle).
      processes: number of processes (JAX process ids ``0 .. processes-1``).
      devices_per_process: CPU devices per process
        (``--xla_force_host_platform_device_count`` in the workers' ``XLA_FLAGS``;
        this process's environment is left alone). ``None``: JAX's default.
      timeout_s: :meth:`Launch.wait` stops everything after this long
        (``None``: no limit; a failed process still ends the launch).
      stop_grace_s: seconds between SIGTERM and SIGKILL when stopping.
      log_dir: where the logs, arguments and result go; default a temporary
        folder, removed after :meth:`Launch.wait` unless a process failed.
      env: extra environment variables for the workers (``JAX_PLATFORMS``
        defaults to ``cpu``).
      python: the interpreter (default ``sys.executable``).

    Returns:
      The :class:`Launch`.
    """
    if not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive int, got {processes!r}")
    if ":" not in target:
        raise ValueError(f"target must be 'module:function', got {target!r}")
    import cloudpickle

    cleanup = log_dir is None
    folder = Path(tempfile.mkdtemp(prefix="jaxtx-train-") if log_dir is None else log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    args_path, result_path = folder / "kwargs.pkl", folder / "result.pkl"
    result_path.unlink(missing_ok=True)
    try:
        with open(args_path, "wb") as f:
            cloudpickle.dump(dict(kwargs or {}), f)
    except Exception as e:
        raise TypeError(
            f"the arguments of {target} cannot be pickled for the training processes: {e}; "
            "pass plain values (numbers, strings, paths, module-level functions)"
        ) from e
    address = f"127.0.0.1:{free_port()}"
    child_env = _child_env(os.environ, env, devices_per_process)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(processes):
            cmd = [
                python or sys.executable,
                "-m",
                WORKER_MODULE,
                target,
                f"--kwargs={args_path}",
                f"--result={result_path}",
                f"--coordinator={address}",
                f"--num-processes={processes}",
                f"--process-id={i}",
            ]
            with (
                open(folder / f"process-{i}.stdout", "wb") as out,
                open(folder / f"process-{i}.stderr", "wb") as err,
            ):
                procs.append(
                    subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        env=child_env,
                        start_new_session=True,
                    )
                )
    except BaseException:
        Launch(procs, address, str(folder), result_path, 0, 0, False).stop()
        raise
    return Launch(procs, address, str(folder), result_path, timeout_s, stop_grace_s, cleanup)


def launch(target: str, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
    """Run ``target(**kwargs)`` in several training processes and return process 0's result.

    ``launch(...)`` is ``start(...).wait()``; see :func:`start` for the options.

    Args:
      target: ``"package.module:function"``.
      kwargs: its keyword arguments.
      **options: :func:`start`'s keyword options (``processes=2``, ``timeout_s``, ...).

    Returns:
      What ``target`` returned on process 0.

    Raises:
      WorkerError: a process failed; the others were stopped.
      TimeoutError: the run took longer than ``timeout_s``.

    Example:
      >>> launch("mypkg.train:main", {"data": "data/train"}, processes=2)  # doctest: +SKIP
    """
    return start(target, kwargs, **options).wait()
