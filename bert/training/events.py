"""TensorBoard event files, written without TensorFlow (a fine-tuning job never loads it).

On a local disk the events are appended to one file as they are written, so TensorBoard follows
a run live. An object store (`gs://`, `hf://`) has no appends (an object is uploaded whole), so
there the events gathered are uploaded as a new event file at a flush or every
REMOTE_FLUSH_SECONDS. Their names sort in writing order
(`events.out.tfevents.SECONDS.HOST.PID.NNNNNN`), the order in which TensorBoard reads the files of
a folder. Scalars are written as TensorFlow 2's summary API writes them (a tensor with the scalars
plugin's metadata); records are framed by tensorboard's `RecordWriter`.

Events are the run's log, not its state: a write that fails (a full disk) is a warning, and the
events are kept to be written by the next flush; the checkpoint that cannot be written then
stops the run with its own message.
"""

import io
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from absl import logging
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer.record_writer import RecordWriter

from util import atomic, paths

FILE_VERSION = "brain.Event:2"  # what TensorFlow's event writers put first in every file
REMOTE_FLUSH_SECONDS = 120  # an object store gets the events at least this often (TF's default)


class EventFileWriter:
    """Scalars and hyperparameters as TensorBoard events under `logdir`."""

    def __init__(self, logdir: paths.PathLike):
        self._logdir = paths.path(logdir)
        self._remote = paths.is_remote(logdir)
        self._name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        self._name += f".{os.getpid()}"
        self._pending: list[event_pb2.Event] = []
        self._files = 0  # files (remote) or appends (local) written
        self._flushed = time.monotonic()
        self._failing = False

    def _add(self, step: int, summary: summary_pb2.Summary) -> None:
        self._pending.append(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        if not self._remote or time.monotonic() - self._flushed >= REMOTE_FLUSH_SECONDS:
            self.flush()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = [scalar_summary.scalar_pb(k, float(v)).value[0] for k, v in scalars.items()]
        self._add(step, summary_pb2.Summary(value=values))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._add(0, hparams_summary.hparams_pb(dict(hparams)))

    def flush(self) -> None:
        """Writes the events gathered since the last flush: appended to the run's event file on a
        local disk, as one new event file on an object store."""
        self._flushed = time.monotonic()
        if not self._pending:
            return
        events = self._pending
        if self._remote or self._files == 0:  # every file starts with the format's version
            events = [event_pb2.Event(wall_time=events[0].wall_time, file_version=FILE_VERSION)]
            events += self._pending
        buffer = io.BytesIO()
        records = RecordWriter(buffer)
        for event in events:
            records.write(event.SerializeToString())
        try:
            self._write(buffer.getvalue())
        except OSError as e:
            if not self._failing:
                logging.warning("%s: TensorBoard events not written (%s); kept for the next try",
                                self._logdir, e)  # fmt: skip
            self._failing = True
            return
        self._failing = False
        self._files += 1
        self._pending = []

    def _write(self, data: bytes) -> None:
        if self._remote:
            atomic.write_atomically(self._logdir / f"{self._name}.{self._files:06d}", data)
            return
        path = os.path.join(self._logdir, self._name)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # less the umask
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError:
                os.ftruncate(fd, size)  # no torn record: TensorBoard stops reading a file at one
                raise
        finally:
            os.close(fd)

    def close(self) -> None:
        self.flush()
