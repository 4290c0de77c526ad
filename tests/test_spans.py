"""Tests for jaxtx.data.spans: input pattern, span and version resolution."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from jaxtx.data.spans import (
    InputNotFoundError,
    InputPatternError,
    ResolvedInput,
    SpanNotFoundError,
    date_to_span,
    list_data_files,
    resolve_input,
    span_to_date,
)


def _touch(root: Path, *relative: str) -> list[str]:
    paths = []
    for rel in relative:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("a\n1\n")
        paths.append(str(path))
    return paths


@pytest.fixture
def spans(tmp_path: Path) -> Path:
    _touch(
        tmp_path,
        "span-1/a.csv",
        "span-2/a.csv",
        "span-2/b.csv",
        "span-10/a.csv",
        "span-10/_SUCCESS",
        "span-x/a.csv",
    )
    return tmp_path


def test_latest_span_by_default(spans: Path) -> None:
    got = resolve_input(str(spans / "span-{SPAN}" / "*.csv"))
    assert got == ResolvedInput(
        files=(str(spans / "span-10/a.csv"),), span=10, spans=(10,), version=None
    )


def test_explicit_span(spans: Path) -> None:
    got = resolve_input(str(spans / "span-{SPAN}" / "*.csv"), span=2)
    assert got.files == (str(spans / "span-2/a.csv"), str(spans / "span-2/b.csv"))
    assert (got.span, got.spans) == (2, (2,))


def test_span_directory_pattern_takes_data_files_below(spans: Path) -> None:
    got = resolve_input(str(spans / "span-{SPAN}"), span=10)
    assert got.files == (str(spans / "span-10/a.csv"),)


def test_span_range(spans: Path) -> None:
    got = resolve_input(str(spans / "span-{SPAN}/*.csv"), span_range=(1, 2))
    assert got.files == tuple(
        str(spans / p) for p in ("span-1/a.csv", "span-2/a.csv", "span-2/b.csv")
    )
    assert (got.span, got.spans) == (2, (1, 2))


def test_missing_span_lists_available_spans(spans: Path) -> None:
    pattern = str(spans / "span-{SPAN}/*.csv")
    with pytest.raises(
        SpanNotFoundError, match=r"Span 3 not found.*Available spans: 1, 2, 10"
    ) as e:
        resolve_input(pattern, span=3)
    assert pattern in str(e.value)
    with pytest.raises(SpanNotFoundError, match=r"Span\(s\) 3, 4, 5.*Available spans: 1, 2, 10"):
        resolve_input(pattern, span_range=(2, 5))


def test_latest_version_per_span(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "s1/v1/a.csv",
        "s1/v3/a.csv",
        "s2/v1/a.csv",
        "s2/v2/a.csv",
        "s2/v2/b.csv",
        "s2/v10/x.parquet",
    )
    pattern = str(tmp_path / "s{SPAN}" / "v{VERSION}")

    latest = resolve_input(pattern)
    assert latest.files == (str(tmp_path / "s2/v10/x.parquet"),)
    assert (latest.span, latest.version) == (2, 10)

    both = resolve_input(pattern, span_range=(1, 2))
    assert both.files == (str(tmp_path / "s1/v3/a.csv"), str(tmp_path / "s2/v10/x.parquet"))
    assert (both.spans, both.versions, both.version) == ((1, 2), (3, 10), 10)


def test_version_without_span(tmp_path: Path) -> None:
    _touch(tmp_path, "model-v1.jsonl", "model-v2.jsonl")
    got = resolve_input(str(tmp_path / "model-v{VERSION}.jsonl"))
    assert (got.files, got.span, got.spans, got.version) == (
        (str(tmp_path / "model-v2.jsonl"),),
        None,
        (),
        2,
    )


def test_date_spans(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "logs/2024-02-28/part-0.jsonl",
        "logs/2024-02-29/part-0.jsonl",
        "logs/2024-02-29/part-1.jsonl",
        "logs/2024-03-01/part-0.jsonl",
    )
    pattern = str(tmp_path / "logs/{YYYY}-{MM}-{DD}/part-*.jsonl")
    leap_day = date_to_span(dt.date(2024, 2, 29))
    assert leap_day == (dt.date(2024, 2, 29) - dt.date(1970, 1, 1)).days
    assert span_to_date(leap_day) == dt.date(2024, 2, 29)

    latest = resolve_input(pattern)
    assert latest.span == leap_day + 1
    assert latest.files == (str(tmp_path / "logs/2024-03-01/part-0.jsonl"),)

    one = resolve_input(pattern, span=leap_day)
    assert len(one.files) == 2

    several = resolve_input(pattern, span_range=(leap_day - 1, leap_day + 1))
    assert several.spans == (leap_day - 1, leap_day, leap_day + 1)
    assert len(several.files) == 4

    with pytest.raises(SpanNotFoundError, match=r"2024-02-27.*Available spans: .*\(2024-02-28\)"):
        resolve_input(pattern, span=leap_day - 2)


def test_invalid_date_in_path_is_an_error(tmp_path: Path) -> None:
    _touch(tmp_path, "2024-13-01/a.csv")
    with pytest.raises(InputPatternError, match="2024-13-01 is not a valid date"):
        resolve_input(str(tmp_path / "{YYYY}-{MM}-{DD}"))


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("data/{MM}-{DD}/*.csv", r"partial date.*missing \{YYYY\}"),
        ("data/{YYYY}-{MM}/*.csv", r"missing \{DD\}"),
        ("data/{SPAN}/{YYYY}{MM}{DD}.csv", "mixes"),
        ("data/{SPAM}/*.csv", r"Unknown placeholder.*\{SPAM\}"),
    ],
)
def test_malformed_patterns(pattern: str, message: str) -> None:
    with pytest.raises(InputPatternError, match=message):
        resolve_input(pattern)


def test_span_arguments_need_a_span_placeholder(tmp_path: Path) -> None:
    _touch(tmp_path, "a.csv")
    with pytest.raises(InputPatternError, match="no {SPAN}"):
        resolve_input(str(tmp_path / "a.csv"), span=1)
    with pytest.raises(InputPatternError, match="not both"):
        resolve_input(str(tmp_path / "s{SPAN}"), span=1, span_range=(1, 2))
    with pytest.raises(InputPatternError, match="first <= last"):
        resolve_input(str(tmp_path / "s{SPAN}"), span_range=(3, 2))


def test_nothing_matches_names_the_pattern(tmp_path: Path) -> None:
    pattern = str(tmp_path / "none-{SPAN}/*.csv")
    with pytest.raises(InputNotFoundError, match="Nothing matches the input pattern") as e:
        resolve_input(pattern)
    assert pattern in str(e.value)
    assert isinstance(e.value, FileNotFoundError)


def test_plain_file_glob_and_directory(tmp_path: Path) -> None:
    files = _touch(
        tmp_path, "d/a.csv", "d/sub/b.parquet", "d/notes.md", "d/.hidden.csv", "d/_tmp/c.csv"
    )
    assert resolve_input(files[0]) == ResolvedInput((files[0],), None, (), None)
    assert resolve_input(str(tmp_path / "d")).files == (files[0], files[1])
    assert list_data_files(str(tmp_path / "d" / "*.csv")) == [files[0]]
    with pytest.raises(InputNotFoundError, match="does not exist"):
        list_data_files(str(tmp_path / "missing.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match="holds no data file"):
        list_data_files(str(tmp_path / "empty"))
