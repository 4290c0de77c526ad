"""File, glob and directory expansion for local paths and Beam filesystem URIs.

One expander for every reader (ingestion, span resolution, statistics, the
trainer's Parquet input), so a path that works in one place works in all:
local paths (``data/*.csv``, ``file:///data``) and any scheme Apache Beam's
``FileSystems`` knows (``gs://``, ``s3://``, ``hdfs://``, ``azfs://``...).

* A glob (``*``, ``?``, ``[...]``, ``**``) contributes its visible matches; a
  matched directory contributes its files, as below.
* A directory contributes every visible file below it that ``accept`` takes.
* A file contributes itself (whatever its name).
* Hidden names (starting with ``.`` or ``_``: ``_SUCCESS``, ``.crc``,
  ``_temporary``) are never taken from a glob or a directory.

Local results are absolute paths; URIs stay URIs. Beam is imported only when
a URI is used, so reading local files does not load it.
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "NoFilesError",
    "PathNotFoundError",
    "expand_matches",
    "expand_paths",
    "glob",
    "has_glob",
    "is_hidden",
    "is_local",
    "join",
    "normalize",
    "open_input",
]

PathLike = str | os.PathLike[str]


class PathNotFoundError(FileNotFoundError):
    """Nothing exists at a path, or a glob/directory holds no accepted file."""


class NoFilesError(PathNotFoundError):
    """A directory or glob exists but holds no accepted file."""


def is_local(path: PathLike) -> bool:
    """Whether ``path`` is on the local filesystem (no scheme, or ``file://``).

    Args:
      path: a path or URI.

    Returns:
      True for local paths.
    """
    text = os.fspath(path)
    return "://" not in text or text.startswith("file://")


def has_glob(path: PathLike) -> bool:
    """Whether ``path`` holds glob characters (``*``, ``?``, ``[``)."""
    return any(c in os.fspath(path) for c in "*?[")


def is_hidden(name: str) -> bool:
    """Whether a file or directory name is hidden (starts with ``.`` or ``_``)."""
    return name.startswith((".", "_"))


def normalize(path: PathLike) -> str:
    """An absolute local path (``~`` and ``file://`` resolved), or the URI unchanged.

    Args:
      path: a path or URI.

    Returns:
      The normalized path.
    """
    text = os.fspath(path)
    if is_local(text):
        return os.path.abspath(os.path.expanduser(text.removeprefix("file://")))
    return text


def join(*parts: str) -> str:
    """Join path components (local or URI)."""
    if is_local(parts[0]):
        return os.path.join(*parts)
    return _beam().join(*parts)


def glob(pattern: PathLike) -> list[str]:
    """Every path matching a glob, sorted (local: files and directories; URIs: files).

    Args:
      pattern: a glob, local or URI; ``**`` crosses directories.

    Returns:
      The matches, possibly empty.
    """
    text = normalize(pattern)
    if is_local(text):
        return sorted(globlib.glob(text, recursive=True))
    return sorted(m.path for m in _beam().match([text])[0].metadata_list)


def expand_paths(
    entries: PathLike | Sequence[PathLike],
    *,
    accept: Callable[[str], bool] | None = None,
    what: str = "file",
) -> list[str]:
    """Expand files, globs and directories into a sorted list of distinct files.

    Args:
      entries: one path or several; each a file, a glob or a directory.
      accept: decides which files found *inside directories* are taken (by
        path); None takes every visible file. Visible files named directly or
        matched by a glob are always taken.
      what: what is looked for, for error messages (e.g. ``"Parquet file"``).

    Returns:
      Sorted, distinct paths (absolute for local files).

    Raises:
      PathNotFoundError: no entries, an entry that does not exist, or a glob
        without matches.
      NoFilesError: a directory (or the glob's matches) without an accepted file.
    """
    items = [entries] if isinstance(entries, str | os.PathLike) else list(entries)
    if not items:
        raise PathNotFoundError(f"No input given; pass at least one {what}, glob or directory.")
    out: set[str] = set()
    for item in items:
        out.update(_expand_one(os.fspath(item), accept, what))
    return sorted(out)


def expand_matches(
    matches: Iterable[str], accept: Callable[[str], bool] | None = None
) -> list[str]:
    """Files of already-matched paths: directories contribute their accepted files.

    Args:
      matches: paths from :func:`glob`.
      accept: as for :func:`expand_paths`.

    Returns:
      Sorted, distinct, visible files.
    """
    files: set[str] = set()
    for match in matches:
        if is_hidden(_basename(match)):
            continue
        if _is_dir(match):
            files.update(_walk(match, accept))
        elif _is_file(match):
            files.add(match)
    return sorted(files)


def open_input(path: PathLike, *, binary: bool = False) -> Any:
    """Something pyarrow can read: a local path/stream or a Beam filesystem stream.

    Args:
      path: local path or URI.
      binary: True to read the bytes as stored (a local path is returned for
        pyarrow to memory-map); False to decompress by extension (``.gz``...).

    Returns:
      A path (local, ``binary``), a ``pyarrow.NativeFile`` (local) or a file object.
    """
    text = os.fspath(path)
    if is_local(text):
        import pyarrow as pa

        local = text.removeprefix("file://")
        return local if binary else pa.input_stream(local)
    from apache_beam.io.filesystem import CompressionTypes

    compression = CompressionTypes.UNCOMPRESSED if binary else CompressionTypes.AUTO
    return _beam().open(text, compression_type=compression)


def _expand_one(entry: str, accept: Callable[[str], bool] | None, what: str) -> list[str]:
    """The files of one entry (see :func:`expand_paths`)."""
    path = normalize(entry)
    if has_glob(path):
        matches = glob(path)
        if not matches:
            raise PathNotFoundError(
                f"No file matches the glob {entry!r}. Check the path and the pattern; "
                "hidden files and names starting with '_' are never matched."
            )
    elif _is_file(path) or _is_dir(path):
        matches = [path]
    else:
        raise PathNotFoundError(
            f"Input path {entry!r} does not exist (resolved to {path!r}). "
            f"Pass an existing {what}, directory or glob."
        )
    files = expand_matches(matches, accept)
    if not files:
        where = "the matches of the glob" if has_glob(path) else "directory"
        raise NoFilesError(f"no {what} under {where} {entry!r}.")
    return files


def _beam() -> Any:
    """Beam's ``FileSystems`` (imported on first use of a URI)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _is_file(path: str) -> bool:
    if is_local(path):
        return os.path.isfile(path)
    try:
        found = _beam().match([path])[0].metadata_list
    except Exception:  # Beam raises BeamIOError for a missing object on some filesystems
        return False
    return any(m.path.rstrip("/") == path.rstrip("/") for m in found)


def _is_dir(path: str) -> bool:
    if is_local(path):
        return os.path.isdir(path)
    return bool(_remote_below(path))


def _remote_below(directory: str) -> list[str]:
    """Every object below a URI 'directory' (object stores have no real directories)."""
    pattern = directory.rstrip("/") + "/**"
    try:
        return sorted(m.path for m in _beam().match([pattern])[0].metadata_list)
    except Exception:  # BeamIOError: nothing there
        return []


def _walk(directory: str, accept: Callable[[str], bool] | None) -> list[str]:
    """Visible, accepted files below ``directory`` (hidden directories skipped)."""
    if not is_local(directory):
        prefix = directory.rstrip("/") + "/"
        found = []
        for p in _remote_below(directory):
            parts = p[len(prefix) :].split("/")
            if any(is_hidden(part) for part in parts):
                continue
            if accept is None or accept(p):
                found.append(p)
        return found
    out = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        for n in names:
            p = os.path.abspath(os.path.join(root, n))
            if not is_hidden(n) and (accept is None or accept(p)):
                out.append(p)
    return out
