"""UTF-8 text files read line by line, with bad bytes reported by file and line.

The task readers (GLUE and STS TSV, CoNLL) read through here: a byte sequence that is not
UTF-8 (a latin-1 or UTF-16 file, binary garbage) or a NUL byte (which no text file holds; UTF-16
and UTF-32 text is full of them) is a UserError naming the file, the line and the byte offset,
instead of a bare UnicodeDecodeError from inside a loop or garbage read as text.
"""

import os
from collections.abc import Iterator

from input_pipeline import paths
from input_pipeline.errors import UserError

PathLike = str | os.PathLike
BYTE_ORDER_MARK = "\ufeff"
# Byte order marks of encodings that are not UTF-8, and the name to tell the user.
OTHER_ENCODINGS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                   (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))  # fmt: skip


def _not_utf8(path: PathLike, number: int, offset: int, raw: bytes, error: Exception) -> str:
    start = getattr(error, "start", 0)
    bad = raw[start : start + 4]
    hint = next((name for mark, name in OTHER_ENCODINGS if number == 1 and raw.startswith(mark)),
                None)  # fmt: skip
    saved = f"; it looks like {hint}: save it as UTF-8" if hint else "; save it as UTF-8"
    return f"{path}:{number}: not UTF-8 at byte offset {offset + start} (bytes {bad!r}){saved}"


def lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, the line with its ending) of a UTF-8 file; a leading BOM dropped.

    Lines end at ``\\n`` (a ``\\r\\n`` ending is kept whole, as ``open(newline="")`` keeps it).

    Raises:
      UserError: bytes that are not UTF-8, or a NUL byte, naming the file, line and byte offset.
    """
    offset = 0
    with paths.open_read(path) as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(_not_utf8(path, number, offset, raw, e)) from None
            if "\0" in line:
                at = offset + raw.index(b"\0")
                raise UserError(
                    f"{path}:{number}: a NUL byte at byte offset {at}: not a UTF-8 text file "
                    "(binary, or UTF-16/UTF-32?)"
                )
            offset += len(raw)
            if number == 1 and line.startswith(BYTE_ORDER_MARK):
                line = line[1:]
            yield number, line
