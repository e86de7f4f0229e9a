"""The one path layer: every file the project reads or writes is named by a local path, a
`gs://bucket/key` object or an `hf://` Hugging Face Hub file (for example
`hf://datasets/wikimedia/wikipedia/20231101.en/train-*.parquet`), and is reached through here.

Paths are `etils.epath.Path` objects (pathlib's API; the type Orbax takes), run by epath's
fsspec backend: the operating system for local paths, gcsfs for `gs://`, huggingface_hub's
`HfFileSystem` for `hf://`. With TensorFlow installed epath would send `gs://` and `hf://` to
TF's gfile instead, which knows no `hf://` and cannot be pointed at a GCS emulator, so the
entry points call `use_fsspec_backend` first (see docs/design.md).

Object stores have no rename and no partial objects: one upload is all-or-nothing, so writes
there go straight to the final name (`util/atomic.py`), and readers of a folder look
for the file written last (a manifest, a checkpoint's commit marker).
"""

import glob
import io
import logging
import os
from collections.abc import Sequence
from typing import Any, BinaryIO, TextIO

import fsspec
from etils import epath

from util.errors import UserError

Path = epath.Path
PathLike = str | os.PathLike
REMOTE_PREFIXES = ("gs://", "hf://")  # schemes served by fsspec (gcsfs, HfFileSystem)
_VERSION_FIELDS = ("generation", "blob_id", "etag", "ETag", "mtime", "updated")


def use_fsspec_backend() -> None:
    """Makes epath (ours, and Orbax's) use fsspec rather than TensorFlow's gfile for `gs://`
    and `hf://`. Call before any path is used (epath decides once per process); an explicit
    `EPATH_USE_TF` in the environment wins."""
    os.environ.setdefault("EPATH_USE_TF", "false")


def path(p: PathLike) -> epath.Path:
    """`p` as a path object of this layer."""
    return epath.Path(p)


def is_remote(p: PathLike) -> bool:
    """Whether `p` names an object-store or Hub file rather than a local one."""
    return os.fspath(p).startswith(REMOTE_PREFIXES)


def absolute(p: PathLike) -> epath.Path:
    """`p` made absolute (local paths only; remote ones are absolute already, and epath's own
    `absolute` would prefix them with the working directory)."""
    return path(p) if is_remote(p) else path(os.path.abspath(os.fspath(p)))


def resolve(p: PathLike) -> epath.Path:
    """`p` absolute with symlinks resolved (local paths only; epath's own `resolve` would
    turn `gs://b/k` into `CWD/gs:/b/k`)."""
    return path(p) if is_remote(p) else path(os.path.realpath(os.fspath(p)))


def filesystem(p: PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem serving `p`, and `p` as that filesystem names it."""
    return fsspec.core.url_to_fs(os.fspath(p))


def expand(pattern: PathLike) -> list[epath.Path]:
    """The files (not folders) matching a glob (`**` too), sorted; a file matches itself."""
    text = os.fspath(pattern)
    if not is_remote(text):
        found = (p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        return [path(p) for p in sorted(found)]
    fs, stripped = filesystem(text)
    if glob.has_magic(stripped):
        found = fs.glob(stripped, detail=True)
    else:
        found = {stripped: fs.info(stripped)} if fs.exists(stripped) else {}
    files = sorted(name for name, info in found.items() if info.get("type") == "file")
    return [path(fs.unstrip_protocol(name)) for name in files]


def expand_all(patterns: PathLike | Sequence[PathLike], what: str) -> list[epath.Path]:
    """Every pattern expanded in turn (order of patterns kept, files sorted within each).

    Raises:
      UserError: no pattern, or a pattern that matches no file (named, with `what` it was for).
    """
    patterns = [patterns] if isinstance(patterns, str | os.PathLike) else list(patterns)
    if not patterns:
        raise UserError(f"no {what} paths given")
    files = []
    for pattern in patterns:
        matches = expand(pattern)
        if not matches:
            raise UserError(f"no {what} file matches {os.fspath(pattern)!r}")
        files.extend(matches)
    return files


def open_read(p: PathLike) -> BinaryIO:
    """`p` opened for binary reading (buffered, seekable)."""
    if not is_remote(p):
        return open(os.fspath(p), "rb")
    fs, stripped = filesystem(p)
    return fs.open(stripped, "rb")


def open_text(p: PathLike, encoding: str = "utf-8", newline: str | None = None) -> TextIO:
    """`p` opened for reading text (`open`'s `encoding` and `newline`)."""
    return io.TextIOWrapper(open_read(p), encoding=encoding, newline=newline)


def identity(p: PathLike) -> dict[str, Any]:
    """What tells whether a file changed: its size and modification time (local), or its size
    and the version the store gives it (object generation, Hub blob id)."""
    if not is_remote(p):
        stat = os.stat(os.fspath(p))
        return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    fs, stripped = filesystem(p)
    info = fs.info(stripped)
    version = next((str(info[k]) for k in _VERSION_FIELDS if info.get(k) is not None), "")
    return {"bytes": int(info["size"]), "version": version}


def size(p: PathLike) -> int:
    """The size of file `p` in bytes."""
    if not is_remote(p):
        return os.path.getsize(os.fspath(p))
    fs, stripped = filesystem(p)
    return int(fs.size(stripped))


def open_write(p: PathLike) -> Any:
    """An fsspec file writing the object `p` (remote only): the object appears when the file is
    closed; `discard` drops it instead (nothing is written)."""
    fs, stripped = filesystem(p)
    return fs.open(stripped, "wb")


def discard(f: Any) -> None:
    """Abandons a file from `open_write` so that neither closing it nor garbage collection
    uploads what it holds."""
    try:
        f.discard()  # cancels a resumable upload already begun (GCS would expire it anyway)
    except Exception as e:  # noqa: BLE001 (GCS answers a cancel with 499; unfinished uploads
        # create no object in any case)
        logging.info("abandoned the upload of %s (%s)", getattr(f, "path", f), e)
    finally:
        f.closed = True  # fsspec files upload on close (also from __del__) unless closed
