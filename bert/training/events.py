"""TensorBoard event files, written without TensorFlow (a fine-tuning job never loads it).

On a local disk the events go to one file, appended at each flush, as TensorFlow's writer does.
An object store (`gs://`, `hf://`) has no appends (an object is uploaded whole), so there every
flush uploads the events gathered since the last one as a new event file. Their names sort in
writing order (`events.out.tfevents.SECONDS.HOST.PID.NNNNNN`), the order in which TensorBoard
reads the files of a folder. Scalars are written as TensorFlow 2's summary API writes them (a
tensor with the scalars plugin's metadata); records are framed by tensorboard's `RecordWriter`.
"""

import io
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer.record_writer import RecordWriter

from util import atomic, paths

FILE_VERSION = "brain.Event:2"  # what TensorFlow's event writers put first in every file


class EventFileWriter:
    """Scalars and hyperparameters as TensorBoard events under `logdir`."""

    def __init__(self, logdir: paths.PathLike):
        self._logdir = paths.path(logdir)
        self._remote = paths.is_remote(logdir)
        self._name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        self._name += f".{os.getpid()}"
        self._pending: list[event_pb2.Event] = []
        self._files = 0

    def _add(self, step: int, summary: summary_pb2.Summary) -> None:
        self._pending.append(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = [scalar_summary.scalar_pb(k, float(v)).value[0] for k, v in scalars.items()]
        self._add(step, summary_pb2.Summary(value=values))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._add(0, hparams_summary.hparams_pb(dict(hparams)))

    def flush(self) -> None:
        """Writes the events gathered since the last flush: appended to the run's event file on a
        local disk, as one new event file on an object store."""
        if not self._pending:
            return
        buffer = io.BytesIO()
        records = RecordWriter(buffer)
        events = self._pending
        if self._remote or self._files == 0:  # every file starts with the format's version
            events = [event_pb2.Event(wall_time=events[0].wall_time, file_version=FILE_VERSION)]
            events += self._pending
        for event in events:
            records.write(event.SerializeToString())
        if self._remote:
            name = f"{self._name}.{self._files:06d}"
            atomic.write_atomically(self._logdir / name, buffer.getvalue())
        else:
            with open(os.path.join(self._logdir, self._name), "ab") as f:
                f.write(buffer.getvalue())
        self._files += 1
        self._pending = []

    def close(self) -> None:
        self.flush()
