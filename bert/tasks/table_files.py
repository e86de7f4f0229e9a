"""Rows of a user's table file, the columns asked for: TSV, CSV, JSONL and Parquet (local, ``gs://``
or ``hf://``, through the path layer), columns chosen by header name or by 0-based position.

TSV is read as GLUE files are, with quoting off (default quoting silently merges rows when a
text holds a quote character); CSV follows RFC 4180 (quoted fields may hold commas and newlines).
JSONL lines are objects (columns by key) or arrays (columns by position). TSV, CSV and JSONL may
be compressed (``.gz``, ``.bz2``, ``.xz``, ``.zst``); a UTF-8 byte-order mark is dropped.
Parquet is read one row group at a time, only the columns asked for.

Every problem a user can cause (a missing file or column, a short row, invalid JSON or UTF-8)
raises UserError naming the file and the line or row. What a value must be is the caller's to
check, with the row's `where` ("file:line" or "file: row N (from 0)") in its message.
"""

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from input_pipeline import corpora
from util import paths
from util.errors import UserError

Column = str | int  # a header name (or JSON key, Parquet column), or a 0-based position
FORMATS = ("tsv", "csv", "jsonl", "parquet")
SUFFIXES = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")  # TSV/CSV/JSONL files may be compressed


def parse_columns(text: str) -> tuple[Column, ...]:
    """Columns from a config value: "a,b" names or "0,1" positions (empty: none)."""
    names = [c.strip() for c in text.split(",")] if text.strip() else []
    return tuple(int(c) if c.isdigit() else c for c in names)


def format_of(path: paths.Path, file_format: str, known: Sequence[str] = FORMATS) -> str:
    """``file_format``, or for "auto" the format the file's suffix names (before any
    compression suffix); UserError for a format not in ``known`` or a suffix unknown."""
    if file_format != "auto" and file_format not in known:
        raise UserError(f"file format {file_format!r} is not one of auto, {', '.join(known)}")
    if file_format != "auto":
        return file_format
    name = os.fspath(path)
    name = next((name[: -len(c)] for c in COMPRESSIONS if name.endswith(c)), name)
    suffix = next((s for s in SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise UserError(f"{path}: cannot tell the format from the name; give one of "
                        f"{', '.join(known)}")  # fmt: skip
    return SUFFIXES[suffix]


def text(value: Any, where: str, column: Column) -> str:
    """`value` if it is a non-empty text; else a UserError naming the row and column."""
    if not isinstance(value, str):
        raise UserError(f"{where}: column {column!r} holds {type(value).__name__}, not text")
    if not value.strip():
        raise UserError(f"{where}: column {column!r} is empty")
    return value


def has_columns(
    path: paths.Path, columns: Sequence[Column], file_format: str, header: bool
) -> bool:
    """Whether the file holds every one of `columns`: in its header (TSV, CSV), its first
    record (JSONL) or its schema (Parquet); a position, in the first row."""
    if file_format == "parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415

        with paths.open_read(path) as f:
            names = pq.ParquetFile(f).schema_arrow.names
        return all(c < len(names) if isinstance(c, int) else c in names for c in columns)
    with _open_text(path) as f:
        first = next((line for line in f if line.strip()), "")
    if file_format == "jsonl":
        try:
            record = json.loads(first)
        except json.JSONDecodeError:
            return False  # read_rows names the line
        keys = record if isinstance(record, dict) else range(len(record))
        return all(c in keys for c in columns)
    fields = next(csv.reader([first], delimiter="\t" if file_format == "tsv" else ","), [])
    if header:
        return all(c < len(fields) if isinstance(c, int) else c in fields for c in columns)
    return all(isinstance(c, int) and c < len(fields) for c in columns)


def read_rows(
    path: paths.Path, columns: Sequence[Column], file_format: str, header: bool = True
) -> Iterator[tuple[str, list[Any]]]:
    """(where, the values of ``columns``) of each row of one file, in order; blank lines of
    text files skipped.

    Args:
      file_format: tsv, csv, jsonl or parquet (see `format_of`).
      header: whether TSV/CSV files start with a header line (needed to name columns).
    """
    try:
        if file_format == "jsonl":
            yield from _jsonl(path, columns)
        elif file_format == "parquet":
            yield from _parquet(path, columns)
        else:
            yield from _delimited(path, columns, "\t" if file_format == "tsv" else ",", header)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 at byte {e.start}") from None


def _indices(columns: Sequence[Column], header: Sequence[str] | None, where: str) -> list[int]:
    out = []
    for column in columns:
        if isinstance(column, int):
            out.append(column)
        elif header is None:
            raise UserError(f"{where}: column {column!r} named but the file has no header "
                            "(give positions such as 0,1)")  # fmt: skip
        elif column not in header:
            raise UserError(f"{where}: no column {column!r}; the header has {list(header)}")
        else:
            out.append(list(header).index(column))
    return out


@contextlib.contextmanager
def _open_text(path: paths.Path) -> Iterator[TextIO]:
    """A text file (UTF-8, a byte-order mark dropped), decompressed by its suffix."""
    with corpora.open_decompressed(path) as raw:
        yield io.TextIOWrapper(raw, "utf-8-sig", newline="")


def _delimited(path, columns, delimiter: str, header: bool) -> Iterator[tuple[str, list[Any]]]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        try:
            names = next(reader, None) if header else None
            if header and names is None:
                raise UserError(f"{path}: empty file, expected a header line")
            indices = _indices(columns, names, f"{path}:1")
            for row in reader:
                if row == [] or row == [""]:
                    continue
                where = f"{path}:{reader.line_num}"
                if len(row) <= max(indices):
                    raise UserError(f"{where}: {len(row)} fields, column {max(indices)} (from 0) "
                                    f"is needed for {', '.join(map(str, columns))}")  # fmt: skip
                yield where, [row[i] for i in indices]
        except csv.Error as e:  # e.g. a field over the csv module's limit
            where = f"{path}:{reader.line_num}"
            raise UserError(f"{where}: not a {delimiter!r}-separated line: {e}") from None


def json_lines(path: paths.Path) -> Iterator[tuple[str, Any]]:
    """("file:line", value) for each non-blank line of a JSON Lines file (compressed by its
    suffix or not); a line that is not JSON raises UserError naming it."""
    with _open_text(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e.msg})") from None


def _jsonl(path, columns) -> Iterator[tuple[str, list[Any]]]:
    for where, record in json_lines(path):
        values = []
        for column in columns:
            if isinstance(record, dict) and isinstance(column, str):
                if column not in record:
                    raise UserError(f"{where}: no key {column!r} (keys: {list(record)})")
                values.append(record[column])
            elif isinstance(record, list) and isinstance(column, int):
                if column >= len(record):
                    raise UserError(f"{where}: {len(record)} items, no position {column}")
                values.append(record[column])
            else:
                kind = type(record).__name__
                raise UserError(f"{where}: a JSON {kind} cannot be read by column "
                                f"{column!r} (objects by key, arrays by position)")  # fmt: skip
        yield where, values


def _parquet(path, columns) -> Iterator[tuple[str, list[Any]]]:
    import pyarrow as pa  # noqa: PLC0415 (heavy; only Parquet input needs it)
    import pyarrow.parquet as pq  # noqa: PLC0415

    with paths.open_read(path) as f:
        try:
            parquet = pq.ParquetFile(f)
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: not a readable Parquet file ({e})") from None
        names = parquet.schema_arrow.names
        for column in columns:
            if isinstance(column, int) and column >= len(names):
                raise UserError(f"{path}: {len(names)} columns, no position {column}")
        wanted = [names[i] for i in _indices(columns, names, str(path))]
        row = 0
        for group in range(parquet.num_row_groups):
            try:
                table = parquet.read_row_group(group, columns=sorted(set(wanted)))
            except (pa.ArrowException, OSError) as e:
                raise UserError(f"{path}: row group {group} is unreadable ({e})") from None
            values = [table.column(name).to_pylist() for name in wanted]
            for offset, record in enumerate(zip(*values, strict=True)):
                yield f"{path}: row {row + offset} (from 0)", list(record)
            row += table.num_rows
