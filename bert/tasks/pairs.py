"""Training and evaluation data of a bi-encoder: pairs, triplets and scored pairs.

One result type, :class:`PairSet`, from every source:

* TSV, CSV, JSONL and Parquet files (local, ``gs://`` or ``hf://``), columns chosen by header
  name or by 0-based position (:func:`read_pairs`), read by :mod:`bert.tasks.table_files`
  (JSONL arrays by position, as in sentence-transformers' ``embedding-training-data`` files).
* The STS benchmark layout and GLUE STS-B (``file_format="stsbenchmark"`` / ``"glue_stsb"``),
  through :mod:`bert.tasks.sts`'s readers: scored pairs, scores 0..5 as in the files.
* SQuAD JSON (``file_format="squad"``): question/passage pairs, the passage being the
  paragraph or the sentence(s) holding the first answer (:mod:`bert.tasks.squad_pairs`).
* Plain text (``file_format="text"``), one sentence a line: each sentence paired with itself,
  SimCSE's unsupervised pairs (the encoder's dropout makes the two sides differ).

Every problem a user can cause (missing file or column, text that is empty or not a string,
a score that is not a finite number) raises UserError naming the file and the line or row.
"""

import math
import os
from collections.abc import Sequence
from typing import Any

from bert.tasks import squad_pairs, sts, table_files
from bert.tasks.pair_set import PairSet
from bert.tasks.table_files import Column
from util import paths, text_files
from util.errors import UserError

PathLike = str | os.PathLike
KINDS = ("pairs", "triplets", "scored")
FORMATS = ("auto", "tsv", "csv", "jsonl", "parquet", "stsbenchmark", "glue_stsb", "squad", "text")
DEFAULT_COLUMNS = {
    "pairs": ("anchor", "positive"),
    "triplets": ("anchor", "positive", "negative"),
    "scored": ("sentence1", "sentence2", "score"),
}
# what they give
_NATIVE = {"stsbenchmark": "scored", "glue_stsb": "scored", "squad": "pairs", "text": "pairs"}


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
                                  table_files.text(value, where, column))  # fmt: skip

    def result(self) -> PairSet:
        anchors, positives, *rest = (tuple(f) for f in self.fields)
        if self.kind == "triplets":
            return PairSet(anchors, positives, negatives=rest[0])
        if self.kind == "scored":
            return PairSet(anchors, positives, scores=rest[0])
        return PairSet(anchors, positives)


def _read_sts(path: paths.Path, file_format: str) -> PairSet:
    if file_format == "stsbenchmark":
        read = sts.read_sts_benchmark(path)
    else:
        read = sts.read_glue_stsb(path, labeled=True)
    rows = _Rows("scored", DEFAULT_COLUMNS["scored"])
    for i, pair in enumerate(read, start=1):
        rows.add((pair.sentence1, pair.sentence2, pair.score), f"{path}: pair {i}")
    return rows.result()


def _sentence_with_itself(path: paths.Path) -> PairSet:
    """SimCSE's unsupervised pairs: every non-blank line of a text file with itself (the two
    sides then differ only in their dropout draws)."""
    texts = tuple(line.strip() for _, line in text_files.lines(path) if line.strip())
    return PairSet(texts, texts)


def _read_file(path: paths.Path, kind: str, columns: tuple[Column, ...], file_format: str,
               header: bool, passage: str) -> PairSet:  # fmt: skip
    file_format = table_files.format_of(path, file_format, FORMATS[1:])
    if file_format in _NATIVE and kind != _NATIVE[file_format]:
        raise UserError(f"{path}: {file_format} files give {_NATIVE[file_format]}, not {kind}")
    if file_format in ("stsbenchmark", "glue_stsb"):
        return _read_sts(path, file_format)
    if file_format == "squad":
        return squad_pairs.read_squad_pairs(path, passage)
    if file_format == "text":
        return _sentence_with_itself(path)
    rows = _Rows(kind, columns)
    for where, values in table_files.read_rows(path, columns, file_format, header):
        rows.add(values, where)
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
