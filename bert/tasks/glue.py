"""GLUE: the task table, TSV readers, fixed-length features and submission files.

Pure Python and numpy; the model side (head, metric) lives elsewhere. Every file is read as
GLUE distributes it: tab-separated with quoting switched off (default CSV quoting silently
merges rows, e.g. MRPC train parses as 3,570 rows instead of 3,668) and as ``utf-8-sig``
(MRPC starts with a byte-order mark).
"""

import csv
import dataclasses
import math
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from bert.tasks import features
from input_pipeline import tokenizers
from util import atomic, paths, text_files
from util.errors import UserError

PathLike = str | os.PathLike
Column = str | int  # a header name, or a 0-based index for files without a header


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the fields of one kind of file are.

    Attributes:
      has_header: whether the first line names the columns.
      text_columns: one column (single-sentence task) or two (sentence-pair task).
      label_column: the label's column, or None for unlabelled (test) files.
      index_column: the column holding the example id used by submission files, or None.
      width: the number of fields of a row in a file without a header (with one, the header's).
    """

    has_header: bool
    text_columns: tuple[Column, ...]
    label_column: Column | None
    index_column: Column | None = None
    width: int | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """One GLUE task.

    Attributes:
      name: the short name used in configs ("mnli").
      data_dir: the folder name in the GLUE download ("MNLI").
      splits: split name -> file name ("dev_matched" -> "dev_matched.tsv").
      labeled: split name -> Layout for train and dev files.
      unlabeled: Layout for test files.
      labels: the label strings as they appear in the files (class i is labels[i]); empty for
        a regression task.
      metrics: metric names, the first being the one GLUE ranks by.
      submission_names: test split name -> file name expected by the GLUE server.
    """

    name: str
    data_dir: str
    splits: Mapping[str, str]
    labeled: Layout
    unlabeled: Layout
    labels: tuple[str, ...]
    metrics: tuple[str, ...]
    submission_names: Mapping[str, str]

    @property
    def is_regression(self) -> bool:
        """True for STS-B, whose label is a float score."""
        return not self.labels

    @property
    def num_labels(self) -> int:
        """Number of classes (1 for regression: one output)."""
        return len(self.labels) or 1

    @property
    def is_pair(self) -> bool:
        """Whether an example holds two texts."""
        return len(self.labeled.text_columns) == 2


_STANDARD_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
BINARY = ("0", "1")
_ENTAILMENT = ("entailment", "not_entailment")


def _pair_task(
    name: str,
    data_dir: str,
    texts: tuple[str, ...],
    label: str,
    labels: tuple[str, ...],
    metrics: tuple[str, ...],
    submission: str,
) -> Task:
    """A task with a header in every file, an ``index`` column in test, and standard splits."""
    return Task(
        name=name,
        data_dir=data_dir,
        splits=_STANDARD_SPLITS,
        labeled=Layout(True, texts, label),
        unlabeled=Layout(True, texts, None, "index"),
        labels=labels,
        metrics=metrics,
        submission_names={"test": submission},
    )


TASKS: dict[str, Task] = {
    "cola": Task(
        name="cola",
        data_dir="CoLA",
        splits=_STANDARD_SPLITS,
        # No header: source, label, original label (starred), sentence.
        labeled=Layout(False, (3,), 1, width=4),
        unlabeled=Layout(True, ("sentence",), None, "index"),
        labels=BINARY,
        metrics=("matthews_corrcoef",),
        submission_names={"test": "CoLA.tsv"},
    ),
    "sst2": _pair_task("sst2", "SST-2", ("sentence",), "label", BINARY, ("accuracy",), "SST-2.tsv"),
    "mrpc": _pair_task(
        "mrpc",
        "MRPC",
        ("#1 String", "#2 String"),
        "Quality",
        BINARY,
        ("f1", "accuracy"),
        "MRPC.tsv",
    ),
    "stsb": _pair_task(
        "stsb",
        "STS-B",
        ("sentence1", "sentence2"),
        "score",
        (),
        ("pearson", "spearman"),
        "STS-B.tsv",
    ),
    "qqp": Task(
        name="qqp",
        data_dir="QQP",
        splits=_STANDARD_SPLITS,
        labeled=Layout(True, ("question1", "question2"), "is_duplicate"),
        unlabeled=Layout(True, ("question1", "question2"), None, "id"),
        labels=BINARY,
        metrics=("f1", "accuracy"),
        submission_names={"test": "QQP.tsv"},
    ),
    "mnli": Task(
        name="mnli",
        data_dir="MNLI",
        splits={
            "train": "train.tsv",
            "dev_matched": "dev_matched.tsv",
            "dev_mismatched": "dev_mismatched.tsv",
            "test_matched": "test_matched.tsv",
            "test_mismatched": "test_mismatched.tsv",
        },
        labeled=Layout(True, ("sentence1", "sentence2"), "gold_label"),
        unlabeled=Layout(True, ("sentence1", "sentence2"), None, "index"),
        labels=("contradiction", "entailment", "neutral"),
        metrics=("accuracy",),
        submission_names={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
    ),
    "qnli": _pair_task(
        "qnli", "QNLI", ("question", "sentence"), "label", _ENTAILMENT, ("accuracy",), "QNLI.tsv"
    ),
    "rte": _pair_task(
        "rte", "RTE", ("sentence1", "sentence2"), "label", _ENTAILMENT, ("accuracy",), "RTE.tsv"
    ),
    "wnli": _pair_task(
        "wnli", "WNLI", ("sentence1", "sentence2"), "label", BINARY, ("accuracy",), "WNLI.tsv"
    ),
}


def get_task(name: str) -> Task:
    """The task called ``name`` (case-insensitive; "sst-2" and "sts-b" also accepted).

    Raises:
      ValueError: an unknown name; the message lists the known ones.
    """
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise UserError(f"unknown GLUE task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]


@dataclasses.dataclass(frozen=True)
class Example:
    """One GLUE example.

    Attributes:
      guid: "<file name>:<line number>", unique within a split.
      text_a: the first (or only) text.
      text_b: the second text of a pair task, else None.
      label: the label string (classification), the score (regression), or None (test files).
      index: the file's own example id (the ``index``/``id`` column of test files), or None.
    """

    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None
    index: str | None = None


def _resolve(column: Column, header: Sequence[str] | None, path: pathlib.Path) -> int:
    if isinstance(column, int):
        return column
    assert header is not None, column
    if column not in header:
        names = repr(list(header))
        names = names if len(names) <= 300 else names[:300] + "...]"
        raise UserError(f"{path}:1: missing column {column!r}; the header has {names}")
    return header.index(column)


def tsv_rows(path: PathLike) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields) of a tab-separated UTF-8 file, quoting off, BOM stripped.

    Raises:
      UserError: bytes that are not UTF-8, a NUL byte, or a field over the csv module's limit
        (128 KiB), naming the file and line.
    """
    numbered = text_files.lines(path)
    reader = csv.reader((line for _, line in numbered), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        yield from ((reader.line_num, row) for row in reader)
    except csv.Error as e:  # e.g. a field over the limit
        raise UserError(f"{path}:{reader.line_num}: not a tab-separated line: {e}") from None


def read_tsv(path: PathLike) -> list[list[str]]:
    """The rows of a GLUE TSV file: tab-separated, quoting off, BOM stripped."""
    return [row for _, row in tsv_rows(path)]


def read_examples(task: str | Task, path: PathLike, labeled: bool | None = None) -> list[Example]:
    """Reads one GLUE file.

    Args:
      task: a task name or Task.
      path: the TSV file.
      labeled: whether the file carries labels; None decides from the name (files named
        ``test*`` are unlabelled).

    Returns:
      The examples, in file order.

    Raises:
      ValueError: a missing column or a label outside the task's set, naming file and line.
    """
    task = get_task(task) if isinstance(task, str) else task
    path = paths.path(path)
    if labeled is None:
        labeled = not path.name.startswith("test")
    layout = task.labeled if labeled else task.unlabeled
    rows = read_tsv(path)
    header = None
    first_line = 1
    if layout.has_header:
        if not rows:
            raise UserError(f"{path}: empty file, expected a header line")
        header, rows, first_line = rows[0], rows[1:], 2
    text_cols = [_resolve(c, header, path) for c in layout.text_columns]
    label_col = None if layout.label_column is None else _resolve(layout.label_column, header, path)
    index_col = None if layout.index_column is None else _resolve(layout.index_column, header, path)
    needed = [c for c in (*text_cols, label_col, index_col) if c is not None]
    width = max(needed) + 1
    exact = len(header) if header is not None else layout.width
    examples = []
    for line, row in enumerate(rows, start=first_line):
        if row == [] or row == [""]:
            continue  # a blank line, e.g. a trailing one
        where = f"{path}:{line}"
        if len(row) < width:
            raise UserError(
                f"{where}: missing column: the row has {len(row)} fields, "
                f"the {task.name} layout needs at least {width}"
            )
        if exact is not None and len(row) > exact:  # its fields would be read shifted
            source = "the header has" if header is not None else f"{task.name} rows have"
            raise UserError(
                f"{where}: {len(row)} tab-separated fields where {source} {exact}: a tab "
                "inside a text? Replace it with a space"
            )
        label = None if label_col is None else _parse_label(task, row[label_col], where)
        examples.append(
            Example(
                guid=f"{path.name}:{line}",
                text_a=row[text_cols[0]],
                text_b=row[text_cols[1]] if len(text_cols) == 2 else None,
                label=label,
                index=None if index_col is None else row[index_col],
            )
        )
    return examples


def _parse_label(task: Task, value: str, where: str) -> str | float:
    value = value.strip()
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            raise UserError(
                f"{where}: label {value[:80]!r} is not a number ({task.name})"
            ) from None
        if not math.isfinite(score):
            raise UserError(f"{where}: label {value[:80]!r} is not a finite number ({task.name})")
        return score
    if value not in task.labels:
        labels = list(task.labels)
        raise UserError(
            f"{where}: label {value[:80]!r} is not one of the {task.name} labels {labels}"
        )
    return value


def read_split(task: str | Task, data_dir: PathLike, split: str) -> list[Example]:
    """Reads ``split`` ("train", "dev", "test", "dev_matched", ...) from a GLUE task folder.

    Args:
      data_dir: the task's own folder (e.g. ``glue_data/MNLI``).
    """
    task = get_task(task) if isinstance(task, str) else task
    if split not in task.splits:
        raise UserError(f"{task.name} has no split {split!r}; it has {list(task.splits)}")
    return read_examples(task, paths.path(data_dir) / task.splits[split])


def convert_examples_to_features(
    examples: Sequence[Example],
    task: str | Task,
    tokenizer: tokenizers.Tokenizer,
    max_seq_length: int,
) -> dict[str, np.ndarray]:
    """Tokenizes examples into fixed-length model inputs.

    ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``; a pair too long is cut longest-first.

    Returns:
      "input_ids", "segment_ids", "input_mask": int32 [num_examples, max_seq_length];
      "label": int32 class ids (-1 where unlabelled) or float32 scores (NaN where
      unlabelled) [num_examples].
    """
    task = get_task(task) if isinstance(task, str) else task
    seconds = [e.text_b or "" for e in examples] if task.is_pair else None
    inputs = features.encode_texts(tokenizer, [e.text_a for e in examples], seconds, max_seq_length)
    if task.is_regression:
        label = np.array([np.nan if e.label is None else e.label for e in examples], np.float32)
    else:
        label_ids = {name: i for i, name in enumerate(task.labels)}
        label = np.full(len(examples), -1, np.int32)
        for i, e in enumerate(examples):
            if e.label is not None:
                if e.label not in label_ids:
                    raise UserError(f"{e.guid}: label {e.label!r} not in {list(task.labels)}")
                label[i] = label_ids[e.label]
    return {**inputs, "label": label}


def write_submission(
    path: PathLike,
    task: str | Task,
    examples: Sequence[Example],
    predictions: Sequence[int] | Sequence[float] | np.ndarray,
    exact_scores: bool = False,
) -> None:
    """Writes test predictions in the GLUE server's format: ``index<TAB>prediction`` lines.

    Args:
      path: the output file (see ``Task.submission_names`` for the names the server expects).
      examples: the test examples, carrying their ``index``.
      predictions: class ids (written as label strings) or scores (written with 3 decimals,
        clipped to GLUE's 0..5 range), one per example.
      exact_scores: write scores as predicted, every digit and no clipping (dev-set
        predictions, from which the reported metrics can be recomputed).
    """
    task = get_task(task) if isinstance(task, str) else task
    predictions = np.asarray(predictions)
    if predictions.shape != (len(examples),):
        raise ValueError(
            f"{len(examples)} examples but predictions of shape {predictions.shape} for {path}"
        )
    lines = ["index\tprediction\n"]
    for i, (example, prediction) in enumerate(zip(examples, predictions, strict=True)):
        index = example.index if example.index is not None else str(i)
        if task.is_regression and exact_scores:
            value = f"{np.float32(prediction):.9g}"  # float32 round-trips exactly
        elif task.is_regression:
            value = f"{min(max(float(prediction), 0.0), 5.0):.3f}"
        else:
            class_id = int(prediction)
            if not 0 <= class_id < len(task.labels):
                raise ValueError(f"prediction {class_id} of example {index} is not a class id")
            value = task.labels[class_id]
        lines.append(f"{index}\t{value}\n")
    atomic.write_atomically(path, "".join(lines))
