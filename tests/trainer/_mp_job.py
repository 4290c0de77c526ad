"""The training job of the multi-process tests, run by ``python -m jaxtx.trainer.worker``.

It is also called in the pytest process for the one-process reference. Every
file this process opens for writing (or renames, or creates as a folder)
under ``out_dir`` is recorded through a Python audit hook and saved to
``writes-<process>.json``: the tests read which process wrote what.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from jaxtx.trainer import Callback

FEATURES = ["x0", "x1", "x2", "x3", "x4", "cat"]
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _record_writes(root: str) -> list[str]:
    """Start recording the paths under ``root`` written by this process (audit hook)."""
    seen: list[str] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        path: Any = None
        if event == "open" and args:
            path, mode, flags = (list(args) + [None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if not writing:
                return
        elif event in ("os.rename", "os.replace", "os.mkdir") and args:
            path = args[1] if event != "os.mkdir" else args[0]
        else:
            return
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        if isinstance(path, str | os.PathLike):
            p = os.path.abspath(os.fspath(path))
            if p.startswith(root):
                seen.append(os.path.relpath(p, root))

    sys.addaudithook(hook)
    return seen


class _Stall(Callback):
    """On process ``process``, write ``marker`` and block at step ``step`` (until killed).

    The kill test uses it to stop one process at a known step, after the first
    checkpoint, instead of racing the training. The block ends after
    ``limit_s`` seconds with an error, so a test that fails to kill it does not hang.
    """

    def __init__(self, step: int, process: int, marker: str, limit_s: float = 120.0) -> None:
        self.step, self.process, self.marker, self.limit_s = step, process, marker, limit_s

    def on_step_end(self, step: int, state: Any, metrics: Any) -> None:
        import threading

        import jax

        if step == self.step and jax.process_index() == self.process:
            Path(self.marker).write_text(str(os.getpid()))
            threading.Event().wait(self.limit_s)
            raise TimeoutError(f"process {self.process} was not killed at step {step}")


def train(
    data_dir: str,
    out_dir: str,
    *,
    epochs: int = 3,
    batch_size: int = 64,
    every_n_steps: int | None = None,
    seed: int = 0,
    record_writes: bool = False,
    stall: tuple[int, int, str] | None = None,
    device_resident: bool | str = "auto",
    shuffle: bool = True,
    file_shards: bool = False,
) -> dict[str, Any]:
    """Train a small MLP on ``data_dir``'s Parquet files; checkpoint, export, save the history.

    With ``file_shards`` each process reads only its files (``files[p::N]``)
    and ``batch_size`` is its part of each global batch.

    Returns:
      ``{"params", "restored_step", "history", "process_count", "device_count"}``
      (process 0's value reaches the launcher).
    """
    import jax
    import optax

    from jaxtx import trainer as jt
    from jaxtx.trainer import distributed

    out = Path(out_dir).resolve()
    writes = _record_writes(str(out)) if record_writes else None
    files = sorted(str(p) for p in Path(data_dir).glob("*.parquet"))
    # file_shards: each process reads files[p::N] and batch_size is its part of a batch
    shards = dict(shard_index=jax.process_index(), num_shards=jax.process_count())
    own = shards if file_shards else {}
    train_ds = jt.ParquetDataset(
        files, FEATURES, "label", batch_size, shuffle_seed=seed if shuffle else None, **own
    )
    eval_ds = jt.ParquetDataset(files, FEATURES, "label", batch_size, **own)
    loop = jt.TrainLoop(
        jt.MLP(hidden=(16,), vocab_sizes={"cat": 6}),
        optax.adam(1e-2),
        loss="binary_crossentropy",
        seed=seed,
        device_resident=device_resident,
    )
    ckpt = jt.Checkpoint(out / "ckpt", every_n_steps=every_n_steps, every_n_epochs=1)
    callbacks: list[Any] = [ckpt]
    if stall is not None:
        callbacks.append(_Stall(*stall))
    history = loop.fit(train_ds, eval_ds, epochs=epochs, callbacks=callbacks)
    ckpt.close()
    signature = jt.make_signature(
        "toy",
        "binary_classification",
        {**{f"x{i}": "float32" for i in range(5)}, "cat": "int32"},
        {"probabilities": "float32", "logits": "float32"},
    )
    loop.export(str(out / "model"), signature)
    if distributed.is_primary():
        history.save(out / "history.json")
    distributed.barrier("job-end")
    if writes is not None:
        record = list(writes)
        (out / f"writes-{jax.process_index()}.json").write_text(json.dumps(record))
    return {
        "params": distributed.host_copy(loop.state.params),
        "restored_step": ckpt.restored_step,
        "history": history.to_dict(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
    }


def fail_on(process: int, message: str) -> None:
    """Raise ``ValueError(message)`` on process ``process``; the others wait for it at a barrier."""
    import jax

    from jaxtx.trainer import distributed

    if jax.process_index() == process:
        raise ValueError(message)
    distributed.barrier("never-reached")
