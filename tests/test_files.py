"""Tests for jaxtx.core.files: one expander for local paths and Beam filesystem URIs.

A tiny Beam filesystem (scheme ``jxtest://``, backed by a local folder, without
directories like an object store) stands in for ``gs://``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

from jaxtx.core import files as fs
from jaxtx.data import ingest
from jaxtx.data.spans import list_data_files, resolve_input

_SCHEME = "jxtest://"


def _local(path: str) -> str:
    return path.removeprefix(_SCHEME)


def _uri(path: str) -> str:
    return _SCHEME + path


class _TestFileSystem(LocalFileSystem):
    """``jxtest:///abs/path`` is the local ``/abs/path``; listed like an object store."""

    @classmethod
    def scheme(cls) -> str:
        return "jxtest"

    def has_dirs(self) -> bool:
        return False

    def join(self, basepath: str, *paths: str) -> str:
        return _uri(os.path.join(_local(basepath), *paths))

    def _list(self, dir_or_prefix: str):  # type: ignore[no-untyped-def]
        root = _local(dir_or_prefix)
        base = root if os.path.isdir(root) else os.path.dirname(root)
        for dirpath, _, names in os.walk(base):
            for n in names:
                p = os.path.join(dirpath, n)
                if p.startswith(root):
                    yield FileMetadata(_uri(p), os.path.getsize(p), os.path.getmtime(p))

    def exists(self, path: str) -> bool:
        return os.path.isfile(_local(path))

    def metadata(self, path: str) -> FileMetadata:
        p = _local(path)
        return FileMetadata(path, os.path.getsize(p), os.path.getmtime(p))

    def open(self, path: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        return super().open(_local(path), *args, **kwargs)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "_tmp").mkdir()
    for name in ("d/a.csv", "d/sub/b.csv", "d/c.txt", "d/_SUCCESS", "d/.a.csv.crc", "d/_tmp/x.csv"):
        (tmp_path / name).write_text("x,y\n1,2\n")
    return tmp_path


def _is_csv(path: str) -> bool:
    return path.endswith(".csv")


@pytest.mark.parametrize("remote", [False, True], ids=["local", "uri"])
def test_expand_paths_same_for_local_and_uri(tree: Path, remote: bool) -> None:
    root = _uri(str(tree)) if remote else str(tree)
    wrap = _uri if remote else (lambda p: p)
    d = f"{root}/d"
    assert fs.expand_paths(d, accept=_is_csv) == [
        wrap(str(tree / "d/a.csv")),
        wrap(str(tree / "d/sub/b.csv")),
    ]
    assert fs.expand_paths(f"{d}/*.txt") == [wrap(str(tree / "d/c.txt"))]
    assert fs.expand_paths([f"{d}/c.txt", f"{d}/a.csv"]) == [
        wrap(str(tree / "d/a.csv")),
        wrap(str(tree / "d/c.txt")),
    ]
    with pytest.raises(fs.PathNotFoundError, match="does not exist"):
        fs.expand_paths(f"{d}/nope.csv")
    with pytest.raises(fs.PathNotFoundError, match="No file matches"):
        fs.expand_paths(f"{d}/*.parquet")


def test_spans_and_ingest_read_uris(tree: Path) -> None:
    base = tree / "spans"
    for span in (1, 2):
        (base / f"span-{span}").mkdir(parents=True)
        (base / f"span-{span}" / "part.csv").write_text(f"x,y\n{span},1\n{span},2\n")
    resolved = resolve_input(_uri(str(base)) + "/span-{SPAN}/*.csv")
    assert resolved.span == 2
    assert resolved.files == (_uri(str(base / "span-2" / "part.csv")),)
    assert list_data_files(_uri(str(tree / "d"))) == [
        _uri(str(tree / "d/a.csv")),
        _uri(str(tree / "d/sub/b.csv")),
    ]
    result = ingest(list(resolved.files), str(tree / "out"))
    assert result.num_read == 2 and result.num_written == 2


def test_parquet_expansion_is_shared_by_trainer_and_statistics(tmp_path: Path) -> None:
    from jaxtx.trainer._data import _expand_files
    from jaxtx.validation.statistics import _parquet_files

    (tmp_path / "p" / "_tmp").mkdir(parents=True)
    for name in ("p/a.parquet", "p/b.parquet", "p/_tmp/c.parquet"):
        pq.write_table(pa.table({"x": [1]}), tmp_path / name)
    uri = _uri(str(tmp_path / "p"))
    expected = [_uri(str(tmp_path / "p/a.parquet")), _uri(str(tmp_path / "p/b.parquet"))]
    assert _expand_files(uri) == expected
    assert _parquet_files([uri]) == expected
