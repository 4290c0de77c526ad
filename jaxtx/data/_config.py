"""Input configuration (CSV dialect, splits) and the ingestion result."""

from __future__ import annotations

import argparse
import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from ._common import (
    _LINE,
    _SPLIT_NAME,
    IngestError,
)


@dataclass(frozen=True)
class CsvOptions:
    """How a CSV (or other delimited text) file is written.

    Attributes:
      header: whether the first line (after ``skip_rows``) holds column names.
        Without a header every line is data: give ``column_names``, or the
        columns are called ``f0``, ``f1``...
      column_names: names of the columns, in order; with ``header=True`` they
        replace the names in the header line.
      delimiter: field separator, one character (``.tsv`` files use a tab when
        this is left at ``,``).
      quote_char: quoting character; None for no quoting at all.
      escape_char: escaping character inside values (e.g. ``\\``); None for none.
      double_quote: whether ``""`` inside a quoted value is one quote.
      null_values: texts that mean "missing" besides the empty field, e.g.
        ``("?", "NA", "NULL")``; compared after trimming when ``trim_whitespace``.
        A quoted value is never missing.
      trim_whitespace: remove spaces around every value (``" Private"`` ->
        ``"Private"``); numbers are always read with surrounding spaces.
      skip_rows: physical lines to skip before the header (or the data).
      comment_prefix: lines starting with this text are ignored (not counted);
        a comment line inside a quoted multi-line value is not recognised.
      encoding: the file's text encoding (e.g. ``"latin-1"``, ``"cp1252"``);
        None reads UTF-8 and quarantines rows with invalid bytes.
    """

    header: bool = True
    column_names: tuple[str, ...] | None = None
    delimiter: str = ","
    quote_char: str | None = '"'
    escape_char: str | None = None
    double_quote: bool = True
    null_values: tuple[str, ...] = ()
    trim_whitespace: bool = False
    skip_rows: int = 0
    comment_prefix: str | None = None
    encoding: str | None = None

    def __post_init__(self) -> None:
        if self.column_names is not None:
            object.__setattr__(self, "column_names", _names(self.column_names))
        object.__setattr__(self, "null_values", _texts("null_values", self.null_values))
        _check_char("delimiter", self.delimiter, allow_none=False)
        _check_char("quote_char", self.quote_char)
        _check_char("escape_char", self.escape_char)
        if self.delimiter in (self.quote_char, self.escape_char):
            raise IngestError(f"delimiter {self.delimiter!r} is also the quote or escape char.")
        if isinstance(self.skip_rows, bool) or not isinstance(self.skip_rows, int):
            raise IngestError(f"skip_rows must be an integer >= 0, got {self.skip_rows!r}.")
        if self.skip_rows < 0:
            raise IngestError(f"skip_rows must be an integer >= 0, got {self.skip_rows!r}.")
        if self.comment_prefix is not None and (
            not isinstance(self.comment_prefix, str)
            or not self.comment_prefix
            or "\n" in self.comment_prefix
        ):
            raise IngestError(
                f"comment_prefix must be non-empty text or None, got {self.comment_prefix!r}."
            )
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except (LookupError, TypeError):
                raise IngestError(
                    f"Unknown encoding {self.encoding!r}; use a Python codec name such as "
                    "'utf-8', 'latin-1' or 'cp1252'."
                ) from None


def add_csv_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the CSV dialect flags (one per :class:`CsvOptions` field) to a command.

    ``--no-header``, ``--column-names``, ``--delimiter``, ``--quote-char`` /
    ``--no-quote``, ``--escape-char``, ``--null-values``, ``--trim-whitespace``,
    ``--skip-rows``, ``--comment-prefix``, ``--encoding``; read them back with
    :func:`csv_options_from_args`.

    Args:
      parser: the command's parser (or an argument group).
    """
    group = parser.add_argument_group(
        "CSV dialect", "how CSV (or other delimited text) files are written; as ExampleGen's"
    )
    group.add_argument(
        "--no-header",
        dest="csv_header",
        action="store_false",
        help="the first line is data, not column names (name them with --column-names; "
        "default f0, f1...)",
    )
    group.add_argument(
        "--column-names",
        metavar="A,B,...",
        help="column names, comma-separated (for headerless files; with a header they "
        "replace its names)",
    )
    group.add_argument(
        "--delimiter", default=",", help="field separator, one character (\\t or 'tab': a tab)"
    )
    group.add_argument("--quote-char", default='"', help="quoting character")
    group.add_argument(
        "--no-quote", dest="quote_char", action="store_const", const=None, help="no quoting"
    )
    group.add_argument("--escape-char", help="escaping character inside values (e.g. \\)")
    group.add_argument(
        "--null-values",
        metavar="V,W,...",
        action="append",
        help="texts meaning missing besides the empty field, comma-separated or repeated "
        "(e.g. NA,?,NULL)",
    )
    group.add_argument("--trim-whitespace", action="store_true", help="remove spaces around values")
    group.add_argument(
        "--skip-rows", type=int, default=0, help="lines to skip before the header (or data)"
    )
    group.add_argument("--comment-prefix", help="skip lines starting with this text (e.g. #)")
    group.add_argument(
        "--encoding", help="the files' text encoding (e.g. latin-1, cp1252); default UTF-8"
    )


def csv_options_from_args(args: argparse.Namespace) -> CsvOptions:
    """The :class:`CsvOptions` of flags added by :func:`add_csv_arguments`.

    Args:
      args: the parsed arguments.

    Returns:
      The dialect.

    Raises:
      IngestError: an invalid value (names the flag's field and what is allowed).
    """
    nulls = [v for given in args.null_values or () for v in given.split(",")]
    names = tuple(n.strip() for n in args.column_names.split(",")) if args.column_names else None
    return CsvOptions(
        header=args.csv_header,
        column_names=names,
        delimiter=_flag_char(args.delimiter),
        quote_char=args.quote_char,
        escape_char=args.escape_char,
        null_values=tuple(nulls),
        trim_whitespace=args.trim_whitespace,
        skip_rows=args.skip_rows,
        comment_prefix=args.comment_prefix,
        encoding=args.encoding,
    )


def _flag_char(text: str) -> str:
    """A delimiter as typed on a command line: ``\\t`` and ``tab`` are a tab."""
    return "\t" if text in ("\\t", "tab", "TAB") else text


def _names(names: Sequence[str]) -> tuple[str, ...]:
    """Validated column names."""
    if isinstance(names, str):
        raise IngestError(f"column_names must be a list of names, got the string {names!r}.")
    out = tuple(names)
    bad = [n for n in out if not isinstance(n, str) or not n or n == _LINE]
    dupes = sorted({n for n in out if out.count(n) > 1})
    if not out or bad or dupes:
        raise IngestError(
            f"column_names must be distinct, non-empty names; got {list(out)!r} "
            f"(invalid: {bad!r}, duplicates: {dupes!r})."
        )
    return out


def _texts(what: str, values: Sequence[str]) -> tuple[str, ...]:
    """Validated texts (one text is a one-element tuple)."""
    if isinstance(values, str):
        values = (values,)
    out = tuple(values)
    if any(not isinstance(v, str) for v in out):
        raise IngestError(f"{what} must be texts, got {list(out)!r}.")
    return out


def _check_char(what: str, value: str | None, *, allow_none: bool = True) -> None:
    """Refuse anything but one non-newline character (or None when allowed)."""
    if value is None and allow_none:
        return
    if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
        raise IngestError(
            f"{what} must be one character other than a newline"
            f"{' (or None)' if allow_none else ''}, got {value!r}."
        )


@dataclass(frozen=True)
class SplitConfig:
    """How examples are divided into splits.

    Attributes:
      names: split names (also directory names), unique.
      buckets: relative size of each split, e.g. ``(2, 1)`` for 2:1; positive ints.
      partition_feature: if set, the split of a row depends only on this
        column's value, so all rows sharing a value land in one split.
    """

    names: tuple[str, ...] = ("train", "eval")
    buckets: tuple[int, ...] = (2, 1)
    partition_feature: str | None = None

    def __post_init__(self) -> None:
        names = tuple(self.names) if not isinstance(self.names, str) else (self.names,)
        buckets = tuple(self.buckets)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "buckets", buckets)
        if not names:
            raise IngestError("SplitConfig.names is empty; give at least one split name.")
        bad = [n for n in names if not isinstance(n, str) or not _SPLIT_NAME.fullmatch(n)]
        if bad:
            raise IngestError(
                f"Invalid split name(s) {bad!r}: use letters, digits, '_', '-' or '.', "
                "starting with a letter or digit."
            )
        if len(set(names)) != len(names):
            raise IngestError(f"Split names must be unique, got {list(names)!r}.")
        if len(buckets) != len(names):
            raise IngestError(
                f"SplitConfig has {len(names)} names {list(names)!r} but {len(buckets)} "
                f"buckets {list(buckets)!r}; give one bucket count per split."
            )
        if any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in buckets):
            raise IngestError(
                f"Split buckets must be positive integers (a ratio such as (2, 1)), "
                f"got {list(buckets)!r}."
            )
        if self.partition_feature is not None and (
            not isinstance(self.partition_feature, str) or not self.partition_feature
        ):
            raise IngestError(
                f"partition_feature must be a column name or None, got {self.partition_feature!r}."
            )


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest` wrote.

    Attributes:
      split_counts: rows written per split (from the Parquet footers).
      num_read: rows read; always ``num_written + num_rejected``.
      num_written: rows written over all splits.
      num_rejected: rows in the quarantine files.
      schema: the Arrow schema of every written shard.
      input_files: the files read, sorted.
      quarantine_files: the quarantine JSONL files (possibly empty files).
      split_files: the Parquet shards of each split.
    """

    split_counts: dict[str, int]
    num_read: int
    num_written: int
    num_rejected: int
    schema: pa.Schema
    input_files: tuple[str, ...]
    quarantine_files: tuple[str, ...]
    split_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
