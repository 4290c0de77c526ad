"""Load a pipeline from a command-line TARGET: ``path/to/file.py[:attr]`` or
``package.module:attr``, a ``Pipeline`` or a function returning one.

Shared by ``jaxtx run`` and scheduled runs (``jaxtx schedule``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._pipeline import Pipeline

__all__ = ["UsageError", "build_pipeline", "check_node_params", "load_target", "parse_params"]


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


def _closest(name: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``name``, else ``""``."""
    near = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _package_module_name(path: Path) -> tuple[str, Path | None] | None:
    """The dotted name under which ``path`` imports as part of its package.

    Returns ``(module_name, sys_path_entry)``: the entry is ``None`` when the
    package is already importable (an installed package, or a loaded one whose
    ``__path__`` holds the file's folder), else the folder above the topmost
    ``__init__.py``. ``None`` when the file's folder is not a package.
    """
    folder = path.parent
    if not (folder / "__init__.py").exists():
        return None
    for mod in list(sys.modules.values()):
        locations = getattr(mod, "__path__", None) or []
        with contextlib.suppress(OSError, TypeError):
            if any(Path(loc).resolve() == folder for loc in locations):
                return f"{mod.__name__}.{path.stem}", None
    parts = [path.stem]
    while (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    # A package installed under another name (``pipelines/`` is ``jaxtx.pipelines``).
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(f"jaxtx.{parts[0]}")
        if (
            spec
            and spec.submodule_search_locations
            and any(
                Path(loc).resolve() == folder / parts[0] for loc in spec.submodule_search_locations
            )
        ):
            return ".".join(["jaxtx", *parts]), None
    return ".".join(parts), folder


def _import_file(path: Path) -> Any:
    """Import a ``.py`` file, as its package's module when it is inside one
    (so relative imports work), else as a standalone module."""
    path = path.resolve()
    named = _package_module_name(path)
    if named is not None:
        module_name, root = named
        if root is not None and str(root) not in sys.path:
            sys.path.insert(0, str(root))
        try:
            return importlib.import_module(module_name)
        except ImportError as e:
            raise UsageError(
                f"{path}: importing it as {module_name!r} failed: {e}; run it as "
                f"'jaxtx run {module_name}:ATTR' with its package importable"
            ) from e
    spec = importlib.util.spec_from_file_location(f"_jaxtx_target_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        if "relative import" not in str(e):
            raise
        raise UsageError(
            f"{path}: uses relative imports but {path.parent} has no __init__.py; add one "
            "or run it as 'jaxtx run package.module:ATTR'"
        ) from e
    return module


def load_target(target: str) -> Any:
    """Import ``file.py[:attr]`` or ``module:attr`` and return the attribute.

    A file inside a package (an ``__init__.py`` in its folder) is imported as
    that package's module, so its relative imports work.

    Args:
      target: ``path/to/file.py[:attr]`` or ``package.module:attr``.

    Returns:
      The attribute: ``attr``, else ``pipeline``, else ``create_pipeline``.

    Raises:
      UsageError: no such file, module or attribute.
    """
    path_part, _, attr = target.partition(":")
    if path_part.endswith(".py") or os.sep in path_part:
        path = Path(path_part)
        if not path.is_file():
            raise UsageError(f"{path}: no such file (TARGET is file.py[:attr] or module:attr)")
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(path_part)
        except ImportError as e:
            raise UsageError(f"cannot import {path_part!r}: {e}") from e
    names = [attr] if attr else ["pipeline", "create_pipeline"]
    for name in names:
        if hasattr(module, name):
            return getattr(module, name)
    hint = _closest(attr, dir(module)) if attr else ""
    raise UsageError(
        f"{target}: no attribute {' or '.join(repr(n) for n in names)} in "
        f"{module.__name__}{hint}; name it as TARGET:attr"
    )


def check_node_params(pipeline: Pipeline, node_params: Mapping[str, Any]) -> None:
    """Check ``{"node_id.param": value}`` against the pipeline's nodes.

    Args:
      pipeline: the pipeline the overrides are for.
      node_params: ``-p`` node parameters.

    Raises:
      UsageError: an unknown node or parameter, naming the closest one.
    """
    ids = [n.id for n in pipeline.nodes]
    for key in node_params:
        node_id, _, param = key.rpartition(".")
        if not node_id or not param:
            raise UsageError(f"-p {key}: write node parameters as NODE_ID.PARAM=VALUE")
        if node_id not in ids:
            raise UsageError(
                f"-p {key}: pipeline {pipeline.name!r} has no node {node_id!r}"
                f"{_closest(node_id, ids)}; nodes: {', '.join(ids)}"
            )
        names = [p.name for p in pipeline[node_id].component.params]
        if param not in names:
            raise UsageError(
                f"-p {key}: node {node_id!r} has no parameter {param!r}"
                f"{_closest(param, names)}; its parameters: {', '.join(names)}"
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
    factory_args = {k: v for k, v in params.items() if "." not in k}
    node_params = {k: v for k, v in params.items() if "." in k}
    if isinstance(obj, Pipeline):
        if factory_args:
            raise UsageError(
                f"-p {next(iter(factory_args))}: {target} is a Pipeline, not a factory; "
                "write node parameters as NODE_ID.PARAM=VALUE"
            )
        check_node_params(obj, node_params)
        return obj, node_params
    if not callable(obj):
        raise UsageError(
            f"{target} is a {type(obj).__name__}, not a Pipeline or a function making one"
        )
    sig = inspect.signature(obj)
    takes = [
        n for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    unknown = [k for k in factory_args if k not in sig.parameters]
    if unknown:
        raise UsageError(
            f"-p {unknown[0]}: {target} takes {takes}{_closest(unknown[0], takes)}; "
            "node parameters are written NODE_ID.PARAM=VALUE"
        )
    missing = [
        n
        for n, p in sig.parameters.items()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in factory_args
    ]
    if missing:
        raise UsageError(
            f"{target} needs {' '.join(f'-p {n}=VALUE' for n in missing)} (it takes {takes})"
        )
    pipeline = obj(**factory_args)
    if not isinstance(pipeline, Pipeline):
        raise UsageError(f"{target} returned {type(pipeline).__name__}, not a Pipeline")
    check_node_params(pipeline, node_params)
    return pipeline, node_params
