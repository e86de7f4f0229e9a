"""One workdir, one job: main.py holds `WORKDIR/job.lock` while a job runs, so a second job
started on the same workdir stops at once with a message naming the holder.

The lock is `fcntl.flock` on the file: the kernel releases it when the holding process ends,
however it ends (`kill -9` included), so a stale lock never blocks the next run; the file itself
stays and records the holder's host and process id for the message. A workdir the lock created
and the job left empty (it stopped on a user error before writing) is removed again. It also
works on NFS (Linux emulates flock with NFS byte-range locks there).

Not locked, by decision:
- object-store workdirs (`gs://`): an object store has no locks and no way to tell that a
  holder died, so a lock object would either block forever after a crash or protect nothing;
  give each job its own workdir there.
- processes other than process 0 of a multi-host job: they belong to the same job. Process 0
  takes the lock, so a second multi-host job on the same (shared) workdir is refused at its
  process 0, whose exit stops that job.
"""

import contextlib
import fcntl
import os
import pathlib
import socket
from collections.abc import Iterator

from util import paths
from util.errors import UserError

LOCK_FILE = "job.lock"


@contextlib.contextmanager
def hold(workdir: str | os.PathLike, process_index: int = 0) -> Iterator[None]:
    """Holds the workdir's job lock for the block (process 0 of a local workdir only).

    Raises:
      UserError: another live process holds the lock.
    """
    if process_index != 0 or paths.is_remote(workdir):
        yield
        return
    directory = pathlib.Path(workdir)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"--workdir={workdir} is a file, not a folder: give a folder's path")
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by spawned workers
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise UserError(
                f"--workdir={workdir} is in use by another job ({holder}, lock {path}); wait "
                "for it to end or use another workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
        if created and [p.name for p in directory.iterdir()] == [LOCK_FILE]:
            with contextlib.suppress(OSError):  # a job that wrote nothing leaves no workdir
                path.unlink()
                directory.rmdir()
