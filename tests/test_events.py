"""TensorBoard event files written without TensorFlow (bert/training/events.py): what TensorFlow's
own summary writer writes for the same scalars, read back by TensorBoard."""

import errno

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator, tag_types
from tensorboard.util import tensor_util

from bert.training import events, reporting

SCALARS = {
    0: {"train/loss": 10.5, "train/learning_rate": 1e-4},
    3: {"train/loss": np.float32(7.25)},
}


def _values(path) -> list[tuple[int, str, str, float]]:
    """(step, tag, plugin, value) of every scalar summary in an event file."""
    out = []
    for event in tf.compat.v1.train.summary_iterator(str(path)):
        for value in event.summary.value:
            plugin = value.metadata.plugin_data.plugin_name
            out.append((event.step, value.tag, plugin, float(tf.make_ndarray(value.tensor))))
    return out


def test_scalars_are_written_as_tensorflows_writer_writes_them(tmp_path):
    (tmp_path / "ours").mkdir()
    ours = reporting.MetricWriter(events.EventFileWriter(tmp_path / "ours"))
    theirs = tf.summary.create_file_writer(str(tmp_path / "theirs"))
    for step, scalars in SCALARS.items():
        ours.write_scalars(step, scalars)
        ours.flush()  # appended to the one file
        with theirs.as_default():
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value, step=step)
    theirs.flush()
    (mine,) = (tmp_path / "ours").glob("events.out.tfevents.*")
    (reference,) = (tmp_path / "theirs").glob("events.out.tfevents.*")
    assert _values(mine) == _values(reference) and len(_values(mine)) == 3


def test_hyperparameters_and_a_restart_read_back_in_tensorboard(tmp_path):
    first = reporting.make_writer(tmp_path)
    first.write_hparams({"train.learning_rate": 1e-4, "model.size": "mini"})
    first.write_scalars(0, SCALARS[0])
    first.flush()
    first.write_scalars(3, SCALARS[3])
    first.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    accumulator = event_accumulator.EventAccumulator(str(tmp_path))
    accumulator.Reload()
    loss = accumulator.Tensors("train/loss")
    assert [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in loss] == [
        (0, 10.5),
        (3, 7.25),
    ]
    assert "_hparams_/session_start_info" in accumulator.Tags()[tag_types.TENSORS]


def test_a_failed_write_leaves_no_torn_record_and_the_events_follow_later(
    tmp_path, monkeypatch, caplog
):
    """A full disk in the middle of an append: the file is cut back to its last whole record,
    one warning says so, and the next write appends the events kept."""
    writer = events.EventFileWriter(tmp_path)
    writer.write_scalars(0, SCALARS[0])  # appended at once on a local disk
    (path,) = tmp_path.glob("events.out.tfevents.*")
    size = path.stat().st_size
    real_write = events.os.write

    def disk_full(fd, data):
        real_write(fd, bytes(data[:7]))  # a torn record, then the error
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(events.os, "write", disk_full)
    writer.write_scalars(1, {"train/loss": 9.5})
    writer.write_scalars(2, {"train/loss": 8.5})
    assert path.stat().st_size == size
    warnings = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], warnings
    monkeypatch.setattr(events.os, "write", real_write)
    writer.write_scalars(3, SCALARS[3])
    assert [(step, value) for step, tag, _, value in _values(path) if tag == "train/loss"] == [
        (0, 10.5),
        (1, 9.5),
        (2, 8.5),
        (3, 7.25),
    ]
