"""Load a pipeline from a command-line TARGET: ``path/to/file.py[:attr]`` or
``package.module:attr``, a ``Pipeline`` or a function returning one.

Shared by ``jaxtx run`` and scheduled runs (``jaxtx schedule``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._pipeline import Pipeline

__all__ = ["UsageError", "build_pipeline", "load_target", "parse_params"]


class UsageError(Exception):
    """Bad command-line usage; exits with code 2."""


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["rows=1000", "Trainer.epochs=3"]`` -> a dict, values parsed as JSON when they can be."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-p {item!r}: write parameters as NAME=VALUE (e.g. -p rows=1000)")
        out[key.strip()] = _parse_value(value)
    return out


def load_target(target: str) -> Any:
    """Import ``file.py[:attr]`` or ``module:attr`` and return the attribute.

    Raises:
      UsageError: no such file, module or attribute.
    """
    path_part, _, attr = target.partition(":")
    if path_part.endswith(".py") or os.sep in path_part:
        path = Path(path_part)
        if not path.exists():
            raise UsageError(f"{path}: no such file (TARGET is file.py[:attr] or module:attr)")
        spec = importlib.util.spec_from_file_location(f"_jaxtx_target_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise UsageError(f"{path}: cannot be imported as Python")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent.resolve()))
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(path_part)
        except ImportError as e:
            raise UsageError(f"cannot import {path_part!r}: {e}") from e
    names = [attr] if attr else ["pipeline", "create_pipeline"]
    for name in names:
        if hasattr(module, name):
            return getattr(module, name)
    raise UsageError(
        f"{target}: no attribute {' or '.join(repr(n) for n in names)} in {module.__name__}; "
        "name it as TARGET:attr"
    )


def build_pipeline(target: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Load ``target`` and, when it is a factory, call it with the factory
    arguments among ``params``.

    Args:
      target: ``path/to/file.py[:attr]`` or ``package.module:attr``.
      params: ``-p`` values; keys with a dot are node parameters.

    Returns:
      ``(pipeline, node_params)``: node parameters are left for the run.

    Raises:
      UsageError: a bad target or factory argument.
    """
    obj = load_target(target)
    if isinstance(obj, Pipeline):
        return obj, params
    if not callable(obj):
        raise UsageError(
            f"{target} is a {type(obj).__name__}, not a Pipeline or a function making one"
        )
    sig = inspect.signature(obj)
    factory_args = {k: v for k, v in params.items() if "." not in k}
    node_params = {k: v for k, v in params.items() if "." in k}
    unknown = [k for k in factory_args if k not in sig.parameters]
    if unknown:
        raise UsageError(
            f"-p {unknown[0]}: {target} takes {list(sig.parameters)}; node parameters are "
            "written node_id.param"
        )
    pipeline = obj(**factory_args)
    if not isinstance(pipeline, Pipeline):
        raise UsageError(f"{target} returned {type(pipeline).__name__}, not a Pipeline")
    return pipeline, node_params
