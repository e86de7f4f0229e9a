"""TensorBoard event files written through the path layer, for workdirs on object stores.

clu's TensorBoard writer goes through TensorFlow's own file system, which appends to one open
file. An object store has no appends (an object is uploaded whole) and TF's GCS client cannot
be pointed anywhere but Google's servers, so for a `gs://` or `hf://` workdir every `flush`
uploads the events gathered since the last one as a new event file. Their names sort in
writing order (`events.out.tfevents.SECONDS.HOST.PID.NNNNNN`), the order in which TensorBoard
reads the files of a folder. Records are framed by tensorboard's own `RecordWriter`.
"""

import io
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from clu.metric_writers import interface
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.summary.writer.record_writer import RecordWriter

from util import atomic, paths

FILE_VERSION = "brain.Event:2"  # what TensorFlow's event writers put first in every file


class EventFileWriter(interface.MetricWriter):
    """Scalars and hyperparameters as TensorBoard events under `logdir`."""

    def __init__(self, logdir: paths.PathLike):
        self._logdir = paths.path(logdir)
        self._prefix = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        self._prefix += f".{os.getpid()}"
        self._pending: list[event_pb2.Event] = []
        self._files = 0

    def _add(self, step: int, summary: summary_pb2.Summary) -> None:
        self._pending.append(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        value = summary_pb2.Summary.Value
        values = [value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
        self._add(step, summary_pb2.Summary(value=values))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._add(0, hparams_summary.hparams_pb(dict(hparams)))

    def _unsupported(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("event files on object stores hold scalars and hparams")

    write_summaries = write_images = write_videos = _unsupported
    write_audios = write_texts = write_histograms = _unsupported

    def flush(self) -> None:
        """Uploads the events gathered since the last flush as one new event file."""
        if not self._pending:
            return
        buffer = io.BytesIO()
        records = RecordWriter(buffer)
        first = event_pb2.Event(wall_time=self._pending[0].wall_time, file_version=FILE_VERSION)
        for event in [first, *self._pending]:
            records.write(event.SerializeToString())
        name = f"{self._prefix}.{self._files:06d}"
        atomic.write_atomically(self._logdir / name, buffer.getvalue())
        self._files += 1
        self._pending = []

    def close(self) -> None:
        self.flush()
