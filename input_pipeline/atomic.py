"""Whole-file writes that never leave a partial file: a temporary file beside the target,
flushed to disk, then renamed over it."""

import os
import pathlib
import tempfile


def write_atomically(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Writes `data` to `path` (parent folders created); on failure `path` is untouched.

    Args:
      mode: permission bits for the file (mkstemp makes it private to the owner).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is not None:
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
