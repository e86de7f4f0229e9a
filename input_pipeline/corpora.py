"""Corpus readers: stream documents, each a list of sentences, from text on disk or TFDS.

Formats (``read_corpus(paths, format)``):

* ``"text"``: the original BERT format, one sentence per line, a blank line between documents.
* ``"paragraphs"``: one paragraph per line, a blank line between documents; paragraphs are
  cut into sentences by `sentence_splitter.split_sentences`.
* ``"jsonl"``: JSON Lines, one document per line, its text in a configurable field; the text
  is cut into paragraphs at newlines, then into sentences.
* ``"wikiextractor"``: WikiExtractor output, ``<doc id=.. url=.. title=..>``, the title line
  (dropped), one paragraph per line, ``</doc>``.
* ``"parquet"``: Parquet files (the Hugging Face Hub's corpora), one document per row, its text
  in a string column (the same ``text_field`` as JSON Lines), cut like a JSON Lines document.
  Read one row group at a time (`parquet_text`).
* ``"csv"``: CSV files with a header line (RFC 4180: quoted fields may hold commas, quotes and
  newlines), one document per row, its text in the column ``text_field`` names (a review per
  row, say), cut like a JSON Lines document; a byte-order mark inside the text is dropped.

TFDS data sets are read by `tfds_corpus.read_tfds`.

Everything streams: a file is read line by line, a document is held only until it is yielded,
so memory is bounded by the largest document (a Parquet row group), never by the file or the
corpus. Files ending in ``.gz``, ``.bz2``, ``.xz`` or ``.zst`` (Zstandard, decoded by pyarrow)
are decompressed on the fly.

Bad input:

* A glob matching no file, a missing file: ``FileNotFoundError`` naming it.
* An empty file, or one of blank lines only: skipped with a warning, counted in
  ``CorpusStats.skipped_files``. A document without text (a WikiExtractor page holding only
  its title, an empty JSON text) is skipped and counted in ``skipped_documents``.
* Invalid UTF-8: by default (``errors="strict"``) a ``ValueError`` naming the file, the byte
  offset and the line. ``errors="replace"`` puts U+FFFD for the bad bytes and counts the line
  in ``replaced_lines``; ``errors="skip"`` drops the line and counts it in ``skipped_lines``.
  In a compressed file the offset is in the decompressed stream.
* Malformed JSON Lines or WikiExtractor structure: ``ValueError`` naming the file and line. A
  JSON text holding a lone surrogate escape (``"\\ud800"``) is treated as invalid UTF-8.
* A compressed file that is cut short or damaged (bad CRC, corrupt stream, garbage): a
  ``UserError`` naming the file and the last line read whole.
* A file that is not Parquet, a missing text column, a column of other values than strings:
  ``UserError`` naming the file and column. In Parquet a row stands for a line above (invalid
  UTF-8 names the row; replaced and skipped rows are counted as lines).
"""

import bz2
import contextlib
import csv
import dataclasses
import gzip
import html
import io
import json
import logging
import lzma
import os
import pathlib
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO

from input_pipeline import parquet_text
from input_pipeline.sentence_splitter import split_sentences
from util import paths as file_paths
from util.errors import UserError

Document = list[str]
PathLike = str | os.PathLike
FORMATS = ("text", "paragraphs", "jsonl", "wikiextractor", "parquet", "csv")
TEXT_FIELD_FORMATS = ("jsonl", "parquet", "csv")  # the formats whose text sits in a named field
ERRORS = ("strict", "replace", "skip")
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")  # decompressed on the fly


@dataclasses.dataclass
class CorpusStats:
    """Counts kept by the readers; pass one in to see what was read and what was skipped."""

    files: int = 0  # files opened
    documents: int = 0  # documents yielded
    sentences: int = 0  # sentences in the yielded documents
    skipped_files: int = 0  # files without any text (empty, or blank lines only)
    skipped_documents: int = 0  # documents without any text
    skipped_lines: int = 0  # lines dropped for invalid UTF-8 (errors="skip")
    replaced_lines: int = 0  # lines with invalid UTF-8 replaced by U+FFFD (errors="replace")


def identity_split(paragraph: str) -> list[str]:
    paragraph = paragraph.strip()
    return [paragraph] if paragraph else []


def text_document(text: str, split: Callable[[str], list[str]]) -> Document:
    """A document held as one text (JSON Lines, Parquet, TFDS): paragraphs at newlines."""
    return [s for paragraph in text.split("\n") for s in split(paragraph)]


# ---------------------------------------------------------------------------------------------
# Reading lines


@contextlib.contextmanager
def _open_binary(path: pathlib.Path) -> Iterator[BinaryIO]:
    """The decompressed bytes of a local, `gs://` or `hf://` file (see `paths`)."""
    with file_paths.open_read(path) as raw:
        if path.suffix == ".gz":
            with gzip.open(raw, "rb") as f:
                yield f
        elif path.suffix == ".bz2":
            with bz2.open(raw, "rb") as f:
                yield f
        elif path.suffix == ".xz":
            with lzma.open(raw, "rb") as f:
                yield f
        elif path.suffix == ".zst":
            with _open_zstd(raw) as f:
                yield f
        else:
            yield raw


def open_decompressed(path: pathlib.Path) -> contextlib.AbstractContextManager[BinaryIO]:
    """The decompressed bytes of a file as the corpus readers see them (by its suffix: .gz,
    .bz2, .xz, .zst, else as it is), for other readers of text files."""
    return _open_binary(path)


def _open_zstd(raw: BinaryIO) -> BinaryIO:
    """Zstandard (every frame, as the zstd tool writes them) through pyarrow's codec."""
    import pyarrow as pa  # noqa: PLC0415 (heavy; only .zst and Parquet input need it)

    return io.BufferedReader(pa.CompressedInputStream(raw, "zstd"), buffer_size=1 << 20)


# What Python's decompressors (and pyarrow's Zstandard stream: OSError or ValueError) raise on a
# damaged or cut file.
DAMAGED_STREAM = (EOFError, OSError, ValueError, zlib.error, lzma.LZMAError)


def _raw_lines(f: BinaryIO, path: pathlib.Path) -> Iterator[bytes]:
    """The lines of `f`; a compressed file that is cut or damaged is a UserError naming it."""
    number = 0
    try:
        for raw in f:
            number += 1
            yield raw
    except DAMAGED_STREAM as e:
        if path.suffix not in COMPRESSED:
            raise
        raise UserError(
            f"{path}: damaged {path.suffix} file, unreadable after line {number} "
            f"({type(e).__name__}: {e})"
        ) from None


def _lines(path: pathlib.Path, errors: str, stats: CorpusStats) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line ending), decoding UTF-8 line by line."""
    if errors not in ERRORS:
        raise UserError(f"errors must be one of {ERRORS}, got {errors!r}")
    if not path.is_file():
        raise UserError(f"corpus file {path} does not exist (or is not a file)")
    offset = 0
    with _open_binary(path) as f:
        for number, raw in enumerate(_raw_lines(f, path), 1):
            if number == 1 and raw.startswith(b"PAR1"):
                raise UserError(
                    f"{path} is a Parquet file, not text: read it with format 'parquet'"
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if errors == "strict":
                    bad = raw[e.start : e.end]
                    raise UserError(
                        f"{path}: invalid UTF-8 at byte offset {offset + e.start} (line {number}, "
                        f"bytes {bad!r}); pass errors='replace' or errors='skip' to go on"
                    ) from None
                offset += len(raw)
                if errors == "skip":
                    stats.skipped_lines += 1
                    continue
                stats.replaced_lines += 1
                line = raw.decode("utf-8", "replace")
            else:
                offset += len(raw)
            del raw  # a huge line is held once, as text, while the caller works on it
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]  # byte order mark
            yield number, line.rstrip("\r\n")


# ---------------------------------------------------------------------------------------------
# Readers; each yields the documents of one file.


def _check_plain(path: pathlib.Path, first_line: str) -> None:
    """Raises when the first line of a file read as plain text shows another format: the
    markup of WikiExtractor or JSON Lines would otherwise be trained on as words."""
    start = first_line.lstrip()
    if start.startswith("<doc ") and " id=" in start:
        raise UserError(
            f"{path} is WikiExtractor output (its first line is {start[:40]!r}), not plain "
            "text: read it with format 'wikiextractor'"
        )
    value = None
    if start.startswith("{"):
        with contextlib.suppress(ValueError):
            value = json.loads(start)
    if isinstance(value, dict):
        raise UserError(
            f"{path} is JSON Lines (its first line is a JSON object), not plain text: read it "
            "with format 'jsonl' (text_field names the text's field)"
        )


def _blank_separated(
    path: pathlib.Path, errors: str, stats: CorpusStats, split: Callable[[str], list[str]]
) -> Iterator[Document]:
    document: Document = []
    checked = False
    for _, line in _lines(path, errors, stats):
        if line and not line.isspace():  # no stripped copy of a huge line
            if not checked:
                _check_plain(path, line)
                checked = True
            document.extend(split(line))
        elif document:
            yield document
            document = []
    if document:
        yield document


def read_text(
    path: PathLike, errors: str = "strict", stats: CorpusStats | None = None
) -> Iterator[Document]:
    """BERT's format: one sentence per line, blank lines between documents."""
    return _read_files([path], _blank_separated, errors, stats, split=identity_split)


def read_paragraphs(
    path: PathLike,
    errors: str = "strict",
    stats: CorpusStats | None = None,
    sentence_split: bool = True,
) -> Iterator[Document]:
    """One paragraph per line, blank lines between documents.

    Args:
      sentence_split: cut paragraphs into sentences; False keeps one paragraph per item.
    """
    split = split_sentences if sentence_split else identity_split
    return _read_files([path], _blank_separated, errors, stats, split=split)


def _jsonl(
    path: pathlib.Path,
    errors: str,
    stats: CorpusStats,
    split: Callable[[str], list[str]],
    text_field: str,
) -> Iterator[Document]:
    for number, line in _lines(path, errors, stats):
        if not line or line.isspace():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})"
            ) from None
        if not isinstance(record, dict) or text_field not in record:
            fields = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise UserError(f"{path}:{number}: no field {text_field!r} (found {fields})")
        text = record[text_field]
        if not isinstance(text, str):
            kind = type(text).__name__
            raise UserError(f"{path}:{number}: field {text_field!r} is a {kind}, not a string")
        text = _without_surrogates(text, f"{path}:{number}", errors, stats)
        if text is None:
            continue
        document = text_document(text, split)
        if document:
            yield document
        else:
            stats.skipped_documents += 1


def _without_surrogates(text: str, where: str, errors: str, stats: CorpusStats) -> str | None:
    """A JSON text holding a lone surrogate escape ("\\ud800", half of a character, which no
    tokenizer takes) follows `errors` as invalid UTF-8 does; None: skip the line."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError as e:
        if errors == "strict":
            raise UserError(
                f"{where}: a lone surrogate {text[e.start]!r} (half of a character) at character "
                f"{e.start}; pass errors='replace' or errors='skip' to go on"
            ) from None
    if errors == "skip":
        stats.skipped_lines += 1
        return None
    stats.replaced_lines += 1
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _parquet(
    path: pathlib.Path,
    errors: str,
    stats: CorpusStats,
    split: Callable[[str], list[str]],
    text_field: str,
) -> Iterator[Document]:
    with _open_binary(path) as f:
        for text in parquet_text.texts(f, str(path), text_field, errors, stats):
            document = text_document(text, split) if text is not None else None
            if document:
                yield document
            else:
                stats.skipped_documents += 1  # null or blank text


def _csv(
    path: pathlib.Path,
    errors: str,
    stats: CorpusStats,
    split: Callable[[str], list[str]],
    text_field: str,
) -> Iterator[Document]:
    numbered = _lines(path, errors, stats)
    number = 0

    def lines() -> Iterator[str]:
        nonlocal number
        for number, line in numbered:  # noqa: B007 (read back by the error messages)
            yield line + "\n"

    reader = csv.reader(lines())
    try:
        header = next(reader, None)
        if header is None:
            return
        if text_field not in header:
            raise UserError(f"{path}:1: no column {text_field!r} (the header has {header[:20]})")
        column = header.index(text_field)
        for row in reader:
            if len(row) <= column:
                if row:  # a blank line is no row
                    raise UserError(f"{path}:{number}: {len(row)} fields, no {text_field!r}")
                continue
            document = text_document(row[column].replace("\ufeff", ""), split)
            if document:
                yield document
            else:
                stats.skipped_documents += 1
    except csv.Error as e:  # a field over the csv module's limit, a NUL byte
        raise UserError(f"{path}:{number}: not a CSV line ({e})") from None


def read_jsonl(
    path: PathLike,
    text_field: str = "text",
    errors: str = "strict",
    stats: CorpusStats | None = None,
    sentence_split: bool = True,
) -> Iterator[Document]:
    """JSON Lines, one document per line; its ``text_field`` is cut at newlines, then sentences."""
    split = split_sentences if sentence_split else identity_split
    return _read_files([path], _jsonl, errors, stats, split=split, text_field=text_field)


_TITLE = re.compile(r'\btitle="([^"]*)"')


def _wikiextractor(
    path: pathlib.Path, errors: str, stats: CorpusStats, split: Callable[[str], list[str]]
) -> Iterator[Document]:
    opened_at = 0  # line of the open <doc>, 0 outside a document
    title: str | None = None  # the title line still to drop, if any
    document: Document = []
    for number, line in _lines(path, errors, stats):
        line = line.strip()
        if line.startswith("<doc ") or line == "<doc>":
            if opened_at:
                raise UserError(
                    f"{path}:{number}: <doc> inside the document opened at line {opened_at} "
                    "(missing </doc>)"
                )
            opened_at = number
            found = _TITLE.search(line)
            title = html.unescape(found.group(1)).strip() if found else None
            document = []
        elif line == "</doc>":
            if not opened_at:
                raise UserError(f"{path}:{number}: </doc> without an open <doc>")
            opened_at = 0
            if document:
                yield document
            else:
                stats.skipped_documents += 1
        elif not line:
            continue
        elif not opened_at:
            raise UserError(f"{path}:{number}: text outside <doc> ... </doc>")
        elif title is not None and html.unescape(line) == title:
            title = None  # the title line WikiExtractor writes after the tag
        else:
            title = None
            document.extend(split(line))
    if opened_at:
        raise UserError(f"{path}: ends inside the document opened at line {opened_at} (no </doc>)")


def read_wikiextractor(
    path: PathLike,
    errors: str = "strict",
    stats: CorpusStats | None = None,
    sentence_split: bool = True,
) -> Iterator[Document]:
    """WikiExtractor output: ``<doc ...>``, the title line (dropped), paragraphs, ``</doc>``.

    The first non-empty line of a document is dropped when it equals the ``title`` attribute
    (HTML entities decoded); every other non-empty line is a paragraph cut into sentences.
    """
    split = split_sentences if sentence_split else identity_split
    return _read_files([path], _wikiextractor, errors, stats, split=split)


_READERS = {
    "text": _blank_separated,
    "paragraphs": _blank_separated,
    "jsonl": _jsonl,
    "wikiextractor": _wikiextractor,
    "parquet": _parquet,
    "csv": _csv,
}


def _read_files(
    paths: Iterable[PathLike],
    reader: Callable[..., Iterator[Document]],
    errors: str,
    stats: CorpusStats | None,
    **kwargs,
) -> Iterator[Document]:
    """Chains ``reader`` over ``paths``, keeping ``stats``; a file without text is skipped."""
    stats = CorpusStats() if stats is None else stats
    for path in paths:
        path = file_paths.path(path)
        stats.files += 1
        documents_before = stats.documents + stats.skipped_documents
        for document in reader(path, errors, stats, **kwargs):
            stats.documents += 1
            stats.sentences += len(document)
            yield document
        if stats.documents + stats.skipped_documents == documents_before:
            stats.skipped_files += 1
            logging.warning("corpus file %s holds no text; skipped", path)


# ---------------------------------------------------------------------------------------------
# Front ends


def expand_paths(paths: str | PathLike | Sequence[str | PathLike]) -> list[pathlib.Path]:
    """Expands globs (``**`` included) of local, ``gs://`` or ``hf://`` files into a sorted
    file list; order of patterns is kept.

    Raises:
      UserError: no pattern, or a pattern or path that matches no file.
    """
    return file_paths.expand_all(paths, "corpus")


def read_corpus(
    paths: str | PathLike | Sequence[str | PathLike],
    format: str,
    *,
    text_field: str = "text",
    errors: str = "strict",
    sentence_split: bool = True,
    stats: CorpusStats | None = None,
) -> Iterator[Document]:
    """Streams the documents of every file matched by ``paths``, file by file in sorted order.

    Args:
      paths: a glob, a path, or a list of them.
      format: one of `FORMATS` (see the module doc).
      text_field: the JSON field or Parquet column holding the text ("jsonl", "parquet").
      errors: invalid UTF-8 handling: "strict" (error), "replace" or "skip" (counted).
      sentence_split: cut paragraphs into sentences (not for "text", split already); False
        keeps whole paragraphs.
      stats: filled in while reading, if given.

    Returns:
      An iterator of documents, each a non-empty list of non-empty sentences.
    """
    if format not in _READERS:
        raise UserError(f"unknown corpus format {format!r}; expected one of {FORMATS}")
    if errors not in ERRORS:
        raise UserError(f"errors must be one of {ERRORS}, got {errors!r}")
    files = expand_paths(paths)  # fails now, not at the first next()
    kwargs: dict = {}
    if format in TEXT_FIELD_FORMATS:
        kwargs["text_field"] = text_field
    split = split_sentences if sentence_split and format != "text" else identity_split
    return _read_files(files, _READERS[format], errors, stats, split=split, **kwargs)
