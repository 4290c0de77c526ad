"""Resolve an input pattern (file, glob or directory) with span/version placeholders.

A pattern names the input of an ExampleGen run. It may be a single file, a glob
(``*``, ``?``, ``[...]``, ``**``) or a directory (every data file below it), and
may carry placeholders in directory or file names:

* ``{SPAN}``: a span number (digits), e.g. ``data/span-{SPAN}/*.csv``;
* ``{YYYY}``, ``{MM}``, ``{DD}``: a date span; the span number is the number of
  days since 1970-01-01 (as in TFX), e.g. ``logs/{YYYY}-{MM}-{DD}/part-*.jsonl``;
* ``{VERSION}``: a version of a span (digits), e.g. ``span-{SPAN}/v{VERSION}/``.

By default the latest span is taken, and within a span its latest version.
Hidden files and directories and names starting with ``_`` (``_SUCCESS``,
``_temporary``, ``.crc``) are never inputs. Paths may be local or any URI
Apache Beam's filesystems know (``gs://``, ``s3://``...): expansion is
:mod:`jaxtx.core.files`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from jaxtx.core import files as fs

__all__ = [
    "DATA_EXTENSIONS",
    "InputNotFoundError",
    "InputPatternError",
    "ResolvedInput",
    "SpanNotFoundError",
    "available_spans",
    "date_to_span",
    "is_data_file",
    "list_data_files",
    "resolve_span",
    "resolve_input",
    "span_to_date",
]

#: Extensions (before an optional compression suffix) of files taken from a directory.
DATA_EXTENSIONS = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")
_COMPRESSION_EXTENSIONS = (".gz", ".bz2", ".zst", ".lz4")
_EPOCH = dt.date(1970, 1, 1)
_PLACEHOLDER = re.compile(r"\{([A-Z]+)\}")
_KNOWN = ("SPAN", "YYYY", "MM", "DD", "VERSION")
_GROUP_REGEX = {
    "SPAN": r"\d+",
    "YYYY": r"\d{4}",
    "MM": r"\d{2}",
    "DD": r"\d{2}",
    "VERSION": r"\d+",
}
_MAX_LISTED = 20


class InputPatternError(ValueError):
    """The input pattern or the span arguments are malformed."""


class InputNotFoundError(fs.PathNotFoundError):
    """Nothing on disk matches the input pattern."""


class SpanNotFoundError(InputNotFoundError):
    """The requested span (or a span of the requested range) has no data."""


@dataclass(frozen=True)
class ResolvedInput:
    """The files chosen for one ExampleGen run.

    Attributes:
      files: sorted, absolute paths of every data file of the chosen span(s).
      span: the (last) span chosen; None if the pattern has no span placeholder.
      spans: every span included, ascending; () if the pattern has no span.
      version: the version taken for ``span``; None without ``{VERSION}``.
      versions: the version taken for each of ``spans`` (same order); () without
        ``{VERSION}`` or without a span.
    """

    files: tuple[str, ...]
    span: int | None
    spans: tuple[int, ...]
    version: int | None
    versions: tuple[int, ...] = ()


def date_to_span(date: dt.date) -> int:
    """Span number of a date span: days since 1970-01-01.

    Args:
      date: the date.

    Returns:
      The span number.
    """
    return (date - _EPOCH).days


def span_to_date(span: int) -> dt.date:
    """Date of a date span number (inverse of :func:`date_to_span`).

    Args:
      span: days since 1970-01-01.

    Returns:
      The date.
    """
    return _EPOCH + dt.timedelta(days=span)


def is_data_file(path: str) -> bool:
    """Whether a directory listing should take ``path`` as an input file.

    Args:
      path: a file path.

    Returns:
      True for a visible file (not starting with ``.`` or ``_``) whose extension,
      after an optional compression suffix, is one of :data:`DATA_EXTENSIONS`.
    """
    name = os.path.basename(path).lower()
    if fs.is_hidden(name):
        return False
    for ext in _COMPRESSION_EXTENSIONS:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return name.endswith(DATA_EXTENSIONS)


def list_data_files(path: str) -> list[str]:
    """Expand a file, glob or directory (no placeholders) into data files.

    Args:
      path: a file, a glob, or a directory; a directory contributes every data
        file below it (see :func:`is_data_file`), a glob every visible match
        (matched directories are expanded the same way).

    Returns:
      Sorted, absolute, distinct paths.

    Raises:
      InputNotFoundError: nothing exists at ``path`` or it holds no data file.
    """
    try:
        return fs.expand_paths(path, accept=is_data_file, what="data file")
    except fs.NoFilesError:
        pass
    except fs.PathNotFoundError as e:
        raise InputNotFoundError(str(e)) from None
    raise InputNotFoundError(
        f"{path!r} holds no data file: expected files ending in "
        f"{', '.join(DATA_EXTENSIONS)} (optionally compressed: "
        f"{', '.join(_COMPRESSION_EXTENSIONS)}). Point at the files themselves or "
        "use a glob such as 'dir/*.txt' with an explicit input format."
    )


def resolve_input(
    pattern: str,
    *,
    span: int | None = None,
    span_range: tuple[int, int] | None = None,
) -> ResolvedInput:
    """Resolve an input pattern to the files of the chosen span(s) and version(s).

    Args:
      pattern: a file, glob or directory, optionally with ``{SPAN}``, ``{YYYY}``
        ``{MM}`` ``{DD}`` (date span) and ``{VERSION}`` placeholders.
      span: take this span (for date spans: days since 1970-01-01, see
        :func:`date_to_span`) instead of the latest one.
      span_range: take every span of this inclusive range ``(first, last)``;
        each must exist. Exclusive with ``span``.

    Returns:
      The chosen files (latest version of each chosen span) and span/version.

    Raises:
      InputPatternError: malformed placeholders, or span arguments that do not
        fit the pattern.
      InputNotFoundError: nothing matches the pattern.
      SpanNotFoundError: a requested span has no data (the message lists the
        spans that exist).
    """
    names = _check_placeholders(pattern)
    has_span = "SPAN" in names or "YYYY" in names
    _check_span_args(pattern, has_span, span, span_range)
    if not names:
        return ResolvedInput(tuple(list_data_files(pattern)), None, (), None)

    absolute = _absolute(pattern)
    glob_pattern, regex = _compile(absolute)
    found = _group_matches(pattern, fs.glob(glob_pattern), regex)
    if not found:
        raise InputNotFoundError(
            f"Nothing matches the input pattern {pattern!r} (searched {glob_pattern!r}, "
            f"with {', '.join('{' + n + '}' for n in sorted(names))} as digits). "
            "Check the path and that the placeholder values are digits "
            "({YYYY} 4, {MM} and {DD} 2)."
        )
    if not has_span:
        version = max((v for _, v in found if v is not None), default=None)
        return _resolved(pattern, found, [(None, version)], names)

    available = sorted({s for s, _ in found if s is not None})
    chosen = _choose_spans(pattern, available, span, span_range, date="YYYY" in names)
    keys: list[tuple[int | None, int | None]] = []
    for s in chosen:
        versions = [v for sp, v in found if sp == s and v is not None]
        keys.append((s, max(versions) if versions else None))
    return _resolved(pattern, found, keys, names)


def _resolved(
    pattern: str,
    found: dict[tuple[int | None, int | None], set[str]],
    keys: list[tuple[int | None, int | None]],
    names: set[str],
) -> ResolvedInput:
    """Build the :class:`ResolvedInput` for the chosen (span, version) keys."""
    files: set[str] = set()
    for key in keys:
        files.update(found[key])
    if not files:
        raise InputNotFoundError(f"The input pattern {pattern!r} matched no data file.")
    spans = tuple(s for s, _ in keys if s is not None)
    versions = tuple(v for _, v in keys if v is not None) if "VERSION" in names else ()
    last_span, last_version = keys[-1]
    return ResolvedInput(
        files=tuple(sorted(files)),
        span=last_span,
        spans=spans,
        version=last_version,
        versions=versions if spans else (),
    )


def _check_placeholders(pattern: str) -> set[str]:
    """Validate the placeholders of ``pattern`` and return the names used."""
    names = set(_PLACEHOLDER.findall(pattern))
    unknown = sorted(names - set(_KNOWN))
    if unknown:
        raise InputPatternError(
            f"Unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)} in "
            f"input pattern {pattern!r}; known: {', '.join('{' + k + '}' for k in _KNOWN)}."
        )
    date_parts = names & {"YYYY", "MM", "DD"}
    if date_parts and date_parts != {"YYYY", "MM", "DD"}:
        missing = [p for p in ("YYYY", "MM", "DD") if p not in names]
        raise InputPatternError(
            f"Input pattern {pattern!r} has a partial date: {{YYYY}}, {{MM}} and {{DD}} must "
            f"appear together (missing {', '.join('{' + m + '}' for m in missing)})."
        )
    if date_parts and "SPAN" in names:
        raise InputPatternError(
            f"Input pattern {pattern!r} mixes {{SPAN}} with a date span "
            "({YYYY}/{MM}/{DD}); use one or the other."
        )
    return names


def _check_span_args(
    pattern: str,
    has_span: bool,
    span: int | None,
    span_range: tuple[int, int] | None,
) -> None:
    """Validate ``span``/``span_range`` against the pattern."""
    if span is not None and span_range is not None:
        raise InputPatternError("Pass either span= or span_range=, not both.")
    if (span is not None or span_range is not None) and not has_span:
        raise InputPatternError(
            f"span/span_range given but the input pattern {pattern!r} has no {{SPAN}} "
            "or {YYYY}-{MM}-{DD} placeholder; add one or drop the span argument."
        )
    if span_range is not None and (len(span_range) != 2 or span_range[0] > span_range[1]):
        raise InputPatternError(
            f"span_range must be (first, last) with first <= last, got {span_range!r}."
        )


def _choose_spans(
    pattern: str,
    available: list[int],
    span: int | None,
    span_range: tuple[int, int] | None,
    *,
    date: bool,
) -> list[int]:
    """Pick the spans to read among ``available``."""
    if span is None and span_range is None:
        return [available[-1]]
    assert span is not None or span_range is not None
    wanted = (
        [span] if span is not None else list(range(span_range[0], span_range[1] + 1))  # type: ignore[index]
    )
    missing = [s for s in wanted if s not in set(available)]
    if missing:
        what = (
            f"Span {_fmt_span(missing[0], date)}"
            if span is not None
            else (f"Span(s) {_fmt_list(missing, date)} of span_range {span_range}")
        )
        raise SpanNotFoundError(
            f"{what} not found for input pattern {pattern!r}. Available spans: "
            f"{_fmt_list(available, date)}. Pick one of these, or omit span/span_range "
            f"to take the latest ({_fmt_span(available[-1], date)})."
        )
    return wanted


def _group_matches(
    pattern: str, matches: Iterable[str], regex: re.Pattern[str]
) -> dict[tuple[int | None, int | None], set[str]]:
    """Group the data files of the glob matches by (span, version)."""
    found: dict[tuple[int | None, int | None], set[str]] = {}
    for match in sorted(matches):
        m = regex.fullmatch(match)
        if m is None or fs.is_hidden(os.path.basename(match.rstrip("/"))):
            continue
        key = (_span_of(pattern, match, m), _int_group(m, "VERSION"))
        files = fs.expand_matches([match], is_data_file)
        if files:
            found.setdefault(key, set()).update(files)
    return found


def _span_of(pattern: str, path: str, m: re.Match[str]) -> int | None:
    """The span number encoded in a matched path."""
    groups = m.groupdict()
    if groups.get("SPAN") is not None:
        return int(groups["SPAN"])
    if groups.get("YYYY") is None:
        return None
    try:
        date = dt.date(int(groups["YYYY"]), int(groups["MM"]), int(groups["DD"]))
    except ValueError as e:
        raise InputPatternError(
            f"{path!r} matches the input pattern {pattern!r} but "
            f"{groups['YYYY']}-{groups['MM']}-{groups['DD']} is not a valid date ({e}). "
            "Rename or remove it."
        ) from None
    return date_to_span(date)


def _int_group(m: re.Match[str], name: str) -> int | None:
    value = m.groupdict().get(name)
    return None if value is None else int(value)


def _compile(pattern: str) -> tuple[str, re.Pattern[str]]:
    """Translate an absolute pattern into a glob and a regex with named groups."""
    glob_parts: list[str] = []
    regex_parts: list[str] = []
    seen: set[str] = set()
    pos = 0
    for m in _PLACEHOLDER.finditer(pattern):
        literal = pattern[pos : m.start()]
        glob_parts.append(literal)
        regex_parts.append(_glob_to_regex(literal))
        name = m.group(1)
        glob_parts.append("*")
        regex_parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>{_GROUP_REGEX[name]})")
        seen.add(name)
        pos = m.end()
    glob_parts.append(pattern[pos:])
    regex_parts.append(_glob_to_regex(pattern[pos:]))
    return "".join(glob_parts), re.compile("".join(regex_parts))


def _glob_to_regex(text: str) -> str:
    """Regex for a glob fragment (``**``, ``*``, ``?``, ``[...]``)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if text.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif text.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and "]" in text[i + 2 :]:
            end = text.index("]", i + 2)
            body = text[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _absolute(path: str) -> str:
    return fs.normalize(path)


def _fmt_span(span: int, date: bool) -> str:
    return f"{span} ({span_to_date(span).isoformat()})" if date else str(span)


def _fmt_list(spans: list[int], date: bool) -> str:
    shown = [_fmt_span(s, date) for s in spans]
    if len(shown) > _MAX_LISTED:
        half = _MAX_LISTED // 2
        shown = [*shown[:half], f"... ({len(spans) - 2 * half} more)", *shown[-half:]]
    return ", ".join(shown)


def resolve_span(input_pattern: str, span: int | str | None) -> ResolvedInput:
    """Resolve ``span``: ``"latest"`` (default), ``"latest-N"`` (N spans before
    the latest), an integer span, or an inclusive range ``"A:B"``.
    """
    if span is None or span == "latest":
        return resolve_input(input_pattern)
    if isinstance(span, int):
        return resolve_input(input_pattern, span=span)
    text = str(span).strip()
    if text.startswith("latest-"):
        back = int(text.removeprefix("latest-"))
        spans = available_spans(input_pattern)
        if back >= len(spans):
            raise ValueError(
                f"span={span!r}: {input_pattern!r} has only {len(spans)} span(s) {spans}; "
                f"there is no span {back} before the latest"
            )
        return resolve_input(input_pattern, span=spans[-1 - back])
    if ":" in text:
        a, b = text.split(":", 1)
        return resolve_input(input_pattern, span_range=(int(a), int(b)))
    if text.isdigit():
        return resolve_input(input_pattern, span=int(text))
    raise ValueError(
        f"span={span!r}: expected 'latest', 'latest-N', an integer span or a range 'A:B'"
    )


def available_spans(input_pattern: str) -> list[int]:
    """Every span the pattern matches, ascending (``[]`` for a pattern without spans)."""
    names = _check_placeholders(input_pattern)
    if not ({"SPAN", "YYYY"} & names):
        return []
    glob_pattern, regex = _compile(_absolute(input_pattern))
    found = _group_matches(input_pattern, fs.glob(glob_pattern), regex)
    return sorted({s for s, _ in found if s is not None})
