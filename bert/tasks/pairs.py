"""Training and evaluation data of a bi-encoder: pairs, triplets and scored pairs.

One result type, :class:`PairSet`, from every source:

* TSV, CSV, JSONL and Parquet files (local, ``gs://`` or ``hf://``, through the path layer),
  columns chosen by header name or by 0-based position (:func:`read_pairs`). TSV is read
  as GLUE files are, with quoting off (default quoting silently merges rows when a sentence
  holds a quote character); CSV follows RFC 4180 (quoted fields may hold commas and newlines).
  JSONL lines are objects (columns by key) or arrays (columns by position, as in
  sentence-transformers' ``embedding-training-data`` files). TSV, CSV and JSONL may be
  compressed (``.gz``, ``.bz2``, ``.xz``, ``.zst``). Parquet is read one row group at a time,
  only the columns asked for.
* The STS benchmark layout and GLUE STS-B (``file_format="stsbenchmark"`` / ``"glue_stsb"``),
  through :mod:`bert.tasks.sts`'s readers: scored pairs, scores 0..5 as in the files.
* SQuAD JSON (``file_format="squad"``): question/passage pairs, the passage being the
  paragraph or the sentence(s) holding the first answer (:mod:`bert.tasks.squad_pairs`).

Every problem a user can cause (missing file or column, text that is empty or not a string,
a score that is not a finite number) raises UserError naming the file and the line or row.
"""

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from bert.tasks import squad_pairs, sts
from bert.tasks.pair_set import PairSet
from input_pipeline import corpora
from util import paths
from util.errors import UserError

PathLike = str | os.PathLike
Column = str | int  # a header name (or JSON key, Parquet column), or a 0-based position
KINDS = ("pairs", "triplets", "scored")
FORMATS = ("auto", "tsv", "csv", "jsonl", "parquet", "stsbenchmark", "glue_stsb", "squad")
DEFAULT_COLUMNS = {
    "pairs": ("anchor", "positive"),
    "triplets": ("anchor", "positive", "negative"),
    "scored": ("sentence1", "sentence2", "score"),
}
_NATIVE = {"stsbenchmark": "scored", "glue_stsb": "scored", "squad": "pairs"}  # what they give
_SUFFIXES = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")  # TSV/CSV/JSONL files may be compressed


def parse_columns(columns: str | Sequence[Column], kind: str) -> tuple[Column, ...]:
    """Columns from a config value: "a,b,c" names, "0,1,2" positions, or empty for the
    kind's defaults (:data:`DEFAULT_COLUMNS`).

    Raises:
      UserError: an unknown kind, or not as many columns as the kind needs.
    """
    if kind not in KINDS:
        raise UserError(f"pair kind {kind!r} is not one of {', '.join(KINDS)}")
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",")] if columns.strip() else []
    parsed = tuple(int(c) if isinstance(c, str) and c.isdigit() else c for c in columns)
    if not parsed:
        return DEFAULT_COLUMNS[kind]
    if len(parsed) != len(DEFAULT_COLUMNS[kind]):
        want = ", ".join(DEFAULT_COLUMNS[kind])
        raise UserError(f"{kind} need {len(DEFAULT_COLUMNS[kind])} columns ({want}), got {parsed}")
    return parsed


def _text(value: Any, where: str, column: Column) -> str:
    if not isinstance(value, str):
        raise UserError(f"{where}: column {column!r} holds {type(value).__name__}, not text")
    if not value.strip():
        raise UserError(f"{where}: column {column!r} is empty")
    return value


def _score(value: Any, where: str, column: Column) -> float:
    if isinstance(value, bool) or value is None:
        raise UserError(f"{where}: score column {column!r} holds {value!r}, not a number")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: score column {column!r} holds {value!r}, not a number") from None
    if not math.isfinite(score):
        raise UserError(f"{where}: score column {column!r} is {score}, not a finite number")
    return score


class _Rows:
    """Collects validated rows of one kind."""

    def __init__(self, kind: str, columns: tuple[Column, ...]):
        self.kind, self.columns = kind, columns
        self.fields: list[list[Any]] = [[] for _ in columns]

    def add(self, values: Sequence[Any], where: str) -> None:
        for i, (value, column) in enumerate(zip(values, self.columns, strict=True)):
            scored = self.kind == "scored" and i == 2
            self.fields[i].append(_score(value, where, column) if scored else
                                  _text(value, where, column))  # fmt: skip

    def result(self) -> PairSet:
        anchors, positives, *rest = (tuple(f) for f in self.fields)
        if self.kind == "triplets":
            return PairSet(anchors, positives, negatives=rest[0])
        if self.kind == "scored":
            return PairSet(anchors, positives, scores=rest[0])
        return PairSet(anchors, positives)


def _indices(columns: tuple[Column, ...], header: Sequence[str] | None, where: str) -> list[int]:
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


def _read_delimited(path: paths.Path, rows: _Rows, delimiter: str, header: bool) -> None:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        names = next(reader, None) if header else None
        if header and names is None:
            raise UserError(f"{path}: empty file, expected a header line")
        indices = _indices(rows.columns, names, f"{path}:1")
        for row in reader:
            if row == [] or row == [""]:
                continue
            where = f"{path}:{reader.line_num}"
            if len(row) <= max(indices):
                raise UserError(f"{where}: {len(row)} fields, column {max(indices)} (from 0) "
                                f"is needed for {', '.join(map(str, rows.columns))}")  # fmt: skip
            rows.add([row[i] for i in indices], where)


def _read_jsonl(path: paths.Path, rows: _Rows) -> None:
    with _open_text(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e.msg})") from None
            values = []
            for column in rows.columns:
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
            rows.add(values, where)


def _read_parquet(path: paths.Path, rows: _Rows) -> None:
    import pyarrow as pa  # noqa: PLC0415 (heavy; only Parquet input needs it)
    import pyarrow.parquet as pq  # noqa: PLC0415

    with paths.open_read(path) as f:
        try:
            parquet = pq.ParquetFile(f)
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: not a readable Parquet file ({e})") from None
        names = parquet.schema_arrow.names
        for column in rows.columns:
            if isinstance(column, int) and column >= len(names):
                raise UserError(f"{path}: {len(names)} columns, no position {column}")
        indices = _indices(rows.columns, names, str(path))
        wanted = [names[i] for i in indices]
        row = 0
        for group in range(parquet.num_row_groups):
            try:
                table = parquet.read_row_group(group, columns=sorted(set(wanted)))
            except (pa.ArrowException, OSError) as e:
                raise UserError(f"{path}: row group {group} is unreadable ({e})") from None
            values = [table.column(name).to_pylist() for name in wanted]
            for offset, record in enumerate(zip(*values, strict=True)):
                rows.add(record, f"{path}: row {row + offset} (from 0)")
            row += table.num_rows


def _read_sts(path: paths.Path, file_format: str) -> PairSet:
    if file_format == "stsbenchmark":
        read = sts.read_sts_benchmark(path)
    else:
        read = sts.read_glue_stsb(path, labeled=True)
    rows = _Rows("scored", DEFAULT_COLUMNS["scored"])
    for i, pair in enumerate(read, start=1):
        rows.add((pair.sentence1, pair.sentence2, pair.score), f"{path}: pair {i}")
    return rows.result()


def _format_of(path: paths.Path, file_format: str) -> str:
    if file_format not in FORMATS:
        raise UserError(f"pair file format {file_format!r} is not one of {', '.join(FORMATS)}")
    if file_format != "auto":
        return file_format
    name = os.fspath(path)
    name = next((name[: -len(c)] for c in COMPRESSIONS if name.endswith(c)), name)
    suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise UserError(f"{path}: cannot tell the format from the name; give one of "
                        f"{', '.join(FORMATS[1:])}")  # fmt: skip
    return _SUFFIXES[suffix]


def _read_file(path: paths.Path, kind: str, columns: tuple[Column, ...], file_format: str,
               header: bool, passage: str) -> PairSet:  # fmt: skip
    file_format = _format_of(path, file_format)
    if file_format in ("stsbenchmark", "glue_stsb", "squad") and kind != _NATIVE[file_format]:
        raise UserError(f"{path}: {file_format} files give {_NATIVE[file_format]}, not {kind}")
    if file_format in ("stsbenchmark", "glue_stsb"):
        return _read_sts(path, file_format)
    if file_format == "squad":
        return squad_pairs.read_squad_pairs(path, passage)
    rows = _Rows(kind, columns)
    try:
        if file_format == "jsonl":
            _read_jsonl(path, rows)
        elif file_format == "parquet":
            _read_parquet(path, rows)
        else:
            _read_delimited(path, rows, "\t" if file_format == "tsv" else ",", header)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 at byte {e.start}") from None
    return rows.result()


def concatenate(sets: Sequence[PairSet]) -> PairSet:
    """The rows of several sets of one kind, in order."""
    first = sets[0]

    def join(field: str) -> tuple | None:
        parts = [getattr(s, field) for s in sets]
        if any(p is None for p in parts):
            if any(p is not None for p in parts):
                raise UserError(f"cannot join pair files where only some have {field}")
            return None
        return tuple(x for p in parts for x in p)

    if len(sets) == 1:
        return first
    return PairSet(join("anchors"), join("positives"), join("negatives"), join("scores"),
                   sum(s.skipped for s in sets))  # fmt: skip


def read_pairs(
    patterns: PathLike | Sequence[PathLike],
    kind: str = "pairs",
    columns: str | Sequence[Column] = "",
    file_format: str = "auto",
    header: bool = True,
    passage: str = "paragraph",
) -> PairSet:
    """Reads pairs, triplets or scored pairs from one or more files (globs allowed).

    Args:
      patterns: files or globs (a comma-separated string is several), local, gs:// or hf://.
      kind: "pairs" (anchor, positive), "triplets" (anchor, positive, negative) or "scored"
        (sentence1, sentence2, score).
      columns: the kind's columns in order, by header name or 0-based position; empty: the
        names in :data:`DEFAULT_COLUMNS`.
      file_format: "auto" (from the suffix: .tsv, .csv, .jsonl, .parquet; the first three
        also compressed, .gz, .bz2, .xz, .zst after it), one of those, or
        "stsbenchmark", "glue_stsb" (scored), "squad" (question/passage pairs).
      header: whether TSV/CSV files start with a header line (needed to name columns).
      passage: for SQuAD: "paragraph" or "sentence" (the sentence holding the answer).

    Raises:
      UserError: no matching file, a missing column, a bad text or score (file and line).
    """
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    parsed = parse_columns(columns, kind)
    files = paths.expand_all(patterns, f"{kind} data")
    return concatenate([_read_file(f, kind, parsed, file_format, header, passage) for f in files])
