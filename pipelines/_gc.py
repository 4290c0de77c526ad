"""A short ``jaxtx run`` without the cyclic garbage collector until work starts.

Start-up creates about a million long-lived objects (the modules of MLflow,
Prefect, SQLAlchemy, pandas): collecting them again and again as they grow is a
fifth of the CPU of a short run, and frees next to nothing. The command line
pauses the collector for ``run`` and ``demo`` (:func:`pause`); it is back on
(:func:`resume`) before a component executes, so long steps collect as usual.
A fully cached run ends before that.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["pause", "resume"]

_LOCK = threading.Lock()
_paused = False


def pause() -> None:
    """Switch the collector off, if it is on (a later :func:`resume` turns it back on)."""
    global _paused
    with _LOCK:
        if gc.isenabled():
            gc.disable()
            _paused = True


def resume() -> None:
    """Switch the collector back on if :func:`pause` switched it off."""
    global _paused
    with _LOCK:
        if _paused:
            _paused = False
            gc.enable()
