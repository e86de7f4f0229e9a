"""The text column of a Parquet file, row by row, with bounded memory.

Hugging Face Hub corpora (wikimedia/wikipedia, FineWeb, C4) are Parquet files with one document
per row. pyarrow reads the file one row group at a time (only the text column), and the rows
are turned into Python strings a small batch at a time, so memory is bounded by one row
group's text column, never by the file.

pyarrow does not check that a string column holds valid UTF-8; the rows are checked here, with
the corpus readers' ``errors`` rule: "strict" raises naming the file, row and byte offset,
"replace" puts U+FFFD for the bad bytes, "skip" drops the row (both counted in ``stats``).
"""

from collections.abc import Iterator
from typing import Any, BinaryIO

from util.errors import UserError

BATCH_ROWS = 256  # rows turned into Python strings at a time (does not change the output)


def _check_column(schema: Any, name: str, column: str) -> None:
    import pyarrow as pa  # noqa: PLC0415 (heavy; only Parquet input needs it)

    if column not in schema.names:
        raise UserError(f"{name}: no column {column!r} (columns: {', '.join(schema.names)})")
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind)):  # fmt: skip
        raise UserError(f"{name}: column {column!r} holds {kind}, not strings")


def _decoded(array: Any, name: str, first_row: int, errors: str, stats: Any) -> list[str | None]:
    """The strings of one batch; a row of invalid UTF-8 follows ``errors``."""
    import pyarrow as pa  # noqa: PLC0415

    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    try:
        return array.to_pylist()
    except UnicodeDecodeError:
        pass  # rare: find the bad rows one by one
    texts: list[str | None] = []
    for row, raw in enumerate(array.cast(pa.large_binary()).to_pylist(), first_row):
        try:
            texts.append(None if raw is None else raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            if errors == "strict":
                raise UserError(
                    f"{name}: invalid UTF-8 in row {row} (from 0) at byte offset {e.start} of "
                    f"its text (bytes {raw[e.start : e.end]!r}); pass errors='replace' or "
                    "errors='skip' to go on"
                ) from None
            if errors == "skip":
                stats.skipped_lines += 1
                continue
            stats.replaced_lines += 1
            texts.append(raw.decode("utf-8", "replace"))
    return texts


def texts(f: BinaryIO, name: str, column: str, errors: str, stats: Any) -> Iterator[str | None]:
    """Each row's text in file order (None for a null), read one row group at a time.

    Args:
      f: the file, opened in binary mode (seekable: Parquet's index sits at its end).
      name: the file's name for messages.
      column: the text column.
      errors: invalid UTF-8 handling: "strict", "replace" or "skip".
      stats: a `corpora.CorpusStats`; replaced and skipped rows are counted in
        ``replaced_lines`` and ``skipped_lines``.

    Raises:
      UserError: not a Parquet file, no such column, a column of other values than strings,
        invalid UTF-8 (strict), or a damaged row group; the message names the file.
    """
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    try:
        parquet = pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{name}: not a readable Parquet file ({e})") from None
    _check_column(parquet.schema_arrow, name, column)
    row = 0
    for group in range(parquet.num_row_groups):
        try:
            table = parquet.read_row_group(group, columns=[column])
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{name}: row group {group} is unreadable ({e})") from None
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            yield from _decoded(batch.column(0), name, row, errors, stats)
            row += batch.num_rows
        table = batch = None  # the row group goes before the next is read
