"""UTF-8 text files read line by line, with bad bytes reported by file and line.

The task readers (GLUE and STS TSV, CoNLL) read through here: a byte sequence that is not
UTF-8 (a latin-1 or UTF-16 file, binary garbage) or a NUL byte (which no text file holds; UTF-16
and UTF-32 text is full of them) is a UserError naming the file, the line and the byte offset,
instead of a bare UnicodeDecodeError from inside a loop or garbage read as text.
"""

import os
import re
from collections.abc import Iterator

from util import paths
from util.errors import UserError

PathLike = str | os.PathLike
BYTE_ORDER_MARK = "\ufeff"
LONE_CARRIAGE_RETURN = re.compile(r"(?<=\r)(?!\n)")  # splits after a \r that ends a line
# Byte order marks of encodings that are not UTF-8, and the name to tell the user.
OTHER_ENCODINGS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                   (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))  # fmt: skip


def _line_of(raw: bytes, index: int, number: int) -> int:
    """The line of byte `index` of a chunk up to \\n starting at line `number` (lone \\r's)."""
    return number + len(re.findall(rb"\r(?!\n)", raw[:index]))


def _not_utf8(path: PathLike, number: int, offset: int, raw: bytes, error: Exception) -> str:
    start = getattr(error, "start", 0)
    number = _line_of(raw, start, number)
    bad = raw[start : start + 4]
    hint = next((name for mark, name in OTHER_ENCODINGS if offset == 0 and raw.startswith(mark)),
                None)  # fmt: skip
    saved = f"; it looks like {hint}: save it as UTF-8" if hint else "; save it as UTF-8"
    return f"{path}:{number}: not UTF-8 at byte offset {offset + start} (bytes {bad!r}){saved}"


def lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, the line with its ending) of a UTF-8 file; a leading BOM dropped.

    Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``, kept as they are (as
    ``open(newline="")`` reads them).

    Raises:
      UserError: bytes that are not UTF-8, or a NUL byte, naming the file, line and byte offset.
    """
    offset = 0
    number = 1  # of the next line
    with paths.open_read(path) as f:
        for raw in f:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(_not_utf8(path, number, offset, raw, e)) from None
            if "\0" in text:
                at = raw.index(b"\0")
                raise UserError(
                    f"{path}:{_line_of(raw, at, number)}: a NUL byte at byte offset "
                    f"{offset + at}: not a UTF-8 text file (binary, or UTF-16/UTF-32?)"
                )
            if offset == 0 and text.startswith(BYTE_ORDER_MARK):
                text = text[1:]
            offset += len(raw)
            # Old Mac files end lines with a lone \r: one chunk up to \n holds several lines.
            for line in LONE_CARRIAGE_RETURN.split(text) if "\r" in text else (text,):
                if line:
                    yield number, line
                    number += 1
