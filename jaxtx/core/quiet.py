"""Silence warnings users cannot act on, at the one import or call that emits them.

Nothing here filters globally: each silencer is scoped to a single module's
import or a single call, and matches the exact message.

- Apache Beam's ``apache_beam.io.gcp.internal.clients.bigquery`` logs
  ``apitools not found ...`` through the *root* logger on every
  ``import apache_beam`` when the optional GCP client is absent (and, by
  calling ``logging.warning``, configures root logging as a side effect).
  :func:`install` wraps that one module's import.
- :func:`quiet_logger` drops one library logger's exact messages around one
  call (MLflow's CloudPickle notice when jaxtx logs its pyfunc wrapper).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

__all__ = ["install", "quiet_env", "quiet_logger", "quiet_root_log"]

_BEAM_BIGQUERY_CLIENTS = "apache_beam.io.gcp.internal.clients.bigquery"


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: Sequence[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


@contextlib.contextmanager
def quiet_root_log(*prefixes: str) -> Iterator[None]:
    """Drop root-logger records starting with ``prefixes`` inside the block.

    A ``NullHandler`` is attached meanwhile so that a library's bare
    ``logging.warning(...)`` does not configure root logging
    (``logging.basicConfig``) behind the application's back.

    Args:
      prefixes: message beginnings to drop.
    """
    root = logging.getLogger()
    filt, null = _DropMessages(prefixes), logging.NullHandler()
    root.addFilter(filt)
    root.addHandler(null)
    try:
        yield
    finally:
        root.removeHandler(null)
        root.removeFilter(filt)


@contextlib.contextmanager
def quiet_logger(name: str, *prefixes: str) -> Iterator[None]:
    """Drop records of logger ``name`` whose message starts with ``prefixes``
    inside the block; every other record passes.

    Args:
      name: the library logger, e.g. ``"mlflow.pyfunc"``.
      prefixes: message beginnings to drop.
    """
    logger = logging.getLogger(name)
    filt = _DropMessages(prefixes)
    logger.addFilter(filt)
    try:
        yield
    finally:
        logger.removeFilter(filt)


@contextlib.contextmanager
def quiet_env(**settings: str) -> Iterator[None]:
    """Set a library's environment switches (e.g. MLflow's progress bar) inside the block.

    A switch the user has set is left as it is.

    Args:
      settings: variable names and values.
    """
    mine = {k: v for k, v in settings.items() if k not in os.environ}
    os.environ.update(mine)
    try:
        yield
    finally:
        for k in mine:
            os.environ.pop(k, None)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, prefixes: Sequence[str]) -> None:
        self.loader, self.prefixes = loader, tuple(prefixes)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with quiet_root_log(*self.prefixes):
            self.loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, ... of the real loader
        return getattr(self.loader, name)


class _QuietImportFinder(importlib.abc.MetaPathFinder):
    """Finds one named module through the other finders and wraps its loader."""

    def __init__(self, name: str, prefixes: Sequence[str]) -> None:
        self.name, self.prefixes = name, tuple(prefixes)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _QuietLoader(spec.loader, self.prefixes)
                return spec
        return None


def install() -> None:
    """Wrap the import of Beam's BigQuery client stubs so that its
    ``apitools not found`` root-log warning is dropped. Idempotent; costs
    nothing until (and unless) Beam is imported."""
    if _BEAM_BIGQUERY_CLIENTS in sys.modules:
        return
    if any(isinstance(f, _QuietImportFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietImportFinder(_BEAM_BIGQUERY_CLIENTS, ["apitools not found"]))
