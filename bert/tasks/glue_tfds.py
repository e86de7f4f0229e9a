"""GLUE from TensorFlow Datasets (`glue/<task>`), for users without the TSV download.

Examples come out exactly as the TSV reader gives them (bert/tasks/glue.py), labels as the
task's own label strings, so everything downstream is the same. TFDS downloads the data on
first use (network needed once) and caches it under its data dir.
"""

import numpy as np

from bert.tasks import glue
from util import tf_runtime
from util.errors import UserError

# Our task name -> TFDS text features, in the order of the task's texts.
TEXT_FEATURES: dict[str, tuple[str, ...]] = {
    "cola": ("sentence",),
    "sst2": ("sentence",),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
# Our split names -> TFDS split names.
SPLITS = {
    "train": "train",
    "dev": "validation",
    "test": "test",
    "dev_matched": "validation_matched",
    "dev_mismatched": "validation_mismatched",
    "test_matched": "test_matched",
    "test_mismatched": "test_mismatched",
}


def tfds_label(task: glue.Task, value: int | float, names: list[str] | None) -> str | float | None:
    """A TFDS label as the TSV reader would give it; None for an unlabelled (test) example.

    Binary tasks whose files hold 0/1 keep the number; the others map by class name (TFDS
    orders MNLI's classes differently from the files' alphabetical order).
    """
    if task.is_regression:
        return None if np.isnan(value) or value < 0 else float(value)
    if value < 0:
        return None
    if task.labels == glue.BINARY:
        return str(int(value))
    name = names[int(value)]
    if name not in task.labels:
        raise UserError(f"TFDS glue/{task.name} label {name!r} is not one of {task.labels}")
    return name


def load_split(task: glue.Task, split: str, data_dir: str | None = None) -> list[glue.Example]:
    """The examples of `split` ("train", "dev", "dev_matched", "test", ...) of TFDS glue/<task>.

    Args:
      data_dir: TFDS's data dir (None: its default, ~/tensorflow_datasets).
    """
    tf_runtime.load()  # TFDS reads through tf.data, on the host
    import tensorflow_datasets as tfds

    if split not in task.splits:
        raise UserError(f"{task.name} has no split {split!r}; it has {list(task.splits)}")
    builder = tfds.builder(f"glue/{task.name}", data_dir=data_dir)
    try:
        builder.download_and_prepare()
    except Exception as e:  # no network, or a broken cache: say what to do instead
        raise UserError(
            f"TFDS glue/{task.name} is not available ({type(e).__name__}: {e}); download GLUE "
            "and set config.data_dir to the task's folder of TSV files"
        ) from e
    label_feature = builder.info.features["label"]
    names = getattr(label_feature, "names", None)
    examples = []
    columns = TEXT_FEATURES[task.name]
    for row in tfds.as_numpy(builder.as_dataset(split=SPLITS[split])):
        texts = [row[c].decode("utf-8") for c in columns]
        index = str(int(row["idx"]))
        examples.append(
            glue.Example(
                guid=f"glue/{task.name}:{split}:{index}",
                text_a=texts[0],
                text_b=texts[1] if len(texts) == 2 else None,
                label=tfds_label(task, row["label"], names),
                index=index,
            )
        )
    examples.sort(key=lambda e: int(e.index))  # the order of the published files
    return examples
