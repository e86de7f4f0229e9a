"""The one atomic file writer: content goes to a temporary file beside the target, is flushed to
disk, and is renamed over the target only when complete, so a failure (or a kill) never leaves a
partial file. Every file the project writes whole (tokenizer models, manifests, results,
predictions, embeddings) goes through here.

On an object store (`gs://`, `hf://`) there is no rename and no partial object: one upload is
already all-or-nothing, so the content is uploaded to the target name when the block succeeds
and discarded when it fails (see `util/paths.py`)."""

import contextlib
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from util import paths


@contextlib.contextmanager
def open_atomically(path: str | os.PathLike, mode: int | None = None) -> Iterator[IO[bytes]]:
    """A binary file to write `path` through; it replaces `path` when the block succeeds.

    Parent folders are created. If the block raises, the temporary file is removed and `path`
    is untouched.

    Args:
      mode: permission bits for a local file; by default those of `open`: 0o666 less the
        process's umask.
    """
    if paths.is_remote(path):
        with _open_remote(path) as f:
            yield f
        return
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)  # mkstemp's is 0o600
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask, read from /proc where the system has it (setting the umask to read
    it, the only other way, changes it for a moment for every thread)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _open_remote(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """The object `path`, uploaded only if the block succeeds."""
    f = paths.open_write(path)
    try:
        yield f
    except BaseException:
        paths.discard(f)
        raise
    f.close()


def write_atomically(path: str | os.PathLike, data: bytes | str, mode: int | None = None) -> None:
    """Writes `data` (text as UTF-8) to `path`; on failure `path` is untouched."""
    with open_atomically(path, mode) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def _finite_json(value: Any) -> Any:
    """`value` with each non-finite float as the string "nan", "inf" or "-inf" (JSON has no
    such numbers; Python's `Infinity` breaks other readers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Writes `value` as indented JSON with sorted keys (results files), atomically; a
    non-finite number is written as the string "nan", "inf" or "-inf"."""
    text = json.dumps(_finite_json(value), indent=2, sort_keys=True, allow_nan=False)
    write_atomically(path, text + "\n")
