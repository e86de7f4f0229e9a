"""A user's labelled files for text classification and regression (configs/classify.py): the
examples, the label names, the held-out splits and the model's fixed-length features.

Files are TSV, CSV, JSONL or Parquet (`table_files`), one text or a text pair per row, columns
by header name or 0-based position. A label is, by `PROBLEM_TYPES`:

* single_label: one class name per row (a string, or a JSON/Parquet integer or boolean, read
  as its text: 1 is "1");
* multi_label: any number of class names: a JSON/Parquet list, or one text field holding the
  names joined by a separator ("sports|politics", empty for none); or several 0/1 columns,
  one per class, each named by its column;
* regression: a finite number.

Class names come from the config in class-id order, or else from the training rows, sorted
(as numbers when all of them are integers: 2 before 10). Rows held out for dev and test, where
no file gives them, are a seeded sample of the training file, each split kept in file order.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bert.tasks import features, table_files
from bert.tasks.table_files import Column
from input_pipeline import tokenizers
from util import paths
from util.errors import UserError

PROBLEM_TYPES = ("single_label", "multi_label", "regression")
_TRUE, _FALSE = ("1", "1.0", "true", "yes"), ("0", "0.0", "false", "no", "")


@dataclasses.dataclass(frozen=True)
class Columns:
    """Where a file's fields are, and how its labels read (`Example.label`)."""

    texts: tuple[Column, ...]  # one text, or a pair
    labels: tuple[Column, ...]  # one label column; multi_label: or one 0/1 column per class
    problem_type: str
    separator: str = "|"  # multi_label, one column of text: between the class names
    file_format: str = "auto"  # auto (from the suffix), tsv, csv, jsonl or parquet
    header: bool = True  # TSV/CSV: the first line names the columns


@dataclasses.dataclass(frozen=True)
class Example:
    """One row: where it is ("file:line"), its text(s), and its label: a class name
    (single_label), a tuple of names (multi_label), a float (regression), or None (a file
    without labels)."""

    where: str
    texts: tuple[str, ...]
    label: Any


def check_columns(texts: Sequence[Column], labels: Sequence[Column], problem_type: str) -> None:
    """UserError naming the config field unless texts, labels and problem type fit together."""
    if problem_type not in PROBLEM_TYPES:
        raise UserError(f"config.problem_type={problem_type!r}: expected one of "
                        f"{', '.join(PROBLEM_TYPES)}")  # fmt: skip
    if len(texts) not in (1, 2):
        raise UserError(f"config.text_columns names {len(texts)} columns: one text, or two "
                        "for a text pair")  # fmt: skip
    if not labels or (len(labels) > 1 and problem_type != "multi_label"):
        raise UserError(f"config.label_column names {len(labels)} columns: one (several 0/1 "
                        "columns, one per class, for problem_type multi_label)")  # fmt: skip


def read_examples(patterns: str, columns: Columns, labelled: bool = True) -> list[Example]:
    """The rows of the files `patterns` (comma-separated globs), in order.

    Args:
      labelled: False reads the texts alone (labels None): a test file without labels.

    Raises:
      UserError: no file, a missing column, an empty text or a bad label, naming file and line.
    """
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    examples = []
    wanted = (*columns.texts, *(columns.labels if labelled else ()))
    for path in paths.expand_all(globs, "labelled data"):
        file_format = table_files.format_of(path, columns.file_format)
        for where, values in table_files.read_rows(path, wanted, file_format, columns.header):
            texts = tuple(map(table_files.text, values, [where] * 2, columns.texts))
            label = _label(values[len(texts) :], where, columns) if labelled else None
            examples.append(Example(where, texts, label))
    return examples


def has_labels(patterns: str, columns: Columns) -> bool:
    """Whether the first file of `patterns` holds every label column (a test file may not)."""
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    first = paths.expand_all(globs, "labelled data")[0]
    return table_files.has_columns(first, columns.labels, table_files.format_of(
        first, columns.file_format), columns.header)  # fmt: skip


def _name(value: Any, where: str, column: Column) -> str:
    """A class name from a field: text as it is (stripped), an integer or boolean as its text."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int | str):
        name = str(value).strip()
        if name:
            return name
    raise UserError(f"{where}: label column {column!r} holds {value!r}, not a class name")


def _label(values: list[Any], where: str, columns: Columns) -> Any:
    column = columns.labels[0]
    if columns.problem_type == "regression":
        value = values[0]
        try:
            score = float(value) if not isinstance(value, bool) and value is not None else None
        except (TypeError, ValueError):
            score = None
        if score is None or not math.isfinite(score):
            raise UserError(f"{where}: label column {column!r} holds {value!r}, not a number")
        return score
    if columns.problem_type == "single_label":
        return _name(values[0], where, column)
    if len(columns.labels) > 1:  # one 0/1 column per class
        return tuple(str(c) for c, v in zip(columns.labels, values, strict=True)
                     if _flag(v, where, c))  # fmt: skip
    value = values[0]
    if isinstance(value, list | tuple):
        return tuple(_name(v, where, column) for v in value)
    if not isinstance(value, str):
        raise UserError(f"{where}: label column {column!r} holds {value!r}, not a list of "
                        f"class names joined by {columns.separator!r}")  # fmt: skip
    return tuple(n.strip() for n in value.split(columns.separator) if n.strip())


def _flag(value: Any, where: str, column: Column) -> bool:
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise UserError(f"{where}: column {column!r} holds {value!r}, not 0 or 1")


def label_names(examples: Sequence[Example], given: str, problem_type: str) -> tuple[str, ...]:
    """The class names in class-id order: `given` (comma-separated), or the training rows'
    names sorted (numerically when every one is an integer); () for regression."""
    if problem_type == "regression":
        return ()
    if given.strip():
        names = tuple(n.strip() for n in given.split(","))
        if "" in names or len(set(names)) != len(names):
            raise UserError(f"config.labels={given!r}: names must be distinct and non-empty")
        return names
    found: set[str] = set()
    for e in examples:
        found.update(e.label if problem_type == "multi_label" else (e.label,))
    numeric = all(n.lstrip("-").isdigit() for n in found)
    names = tuple(sorted(found, key=int if numeric else None))
    least = 2 if problem_type == "single_label" else 1
    if len(names) < least:
        raise UserError(f"the training rows hold {len(names)} class name(s) {list(names)}: a "
                        f"classifier needs {least} or more (or give config.labels)")  # fmt: skip
    return names


def label_array(examples: Sequence[Example], names: Sequence[str], problem_type: str) -> np.ndarray:
    """int32 class ids [N] (-1: unlabelled), float32 multi-hot [N, classes] (NaN rows:
    unlabelled) or float32 scores [N] (NaN: unlabelled)."""
    if problem_type == "regression":
        return np.array([np.nan if e.label is None else e.label for e in examples], np.float32)
    ids = {name: i for i, name in enumerate(names)}
    if problem_type == "multi_label":
        out = np.zeros((len(examples), len(names)), np.float32)
    else:
        out = np.full(len(examples), -1, np.int32)
    for row, e in enumerate(examples):
        if e.label is None:
            if problem_type == "multi_label":
                out[row] = np.nan
            continue
        for name in e.label if problem_type == "multi_label" else (e.label,):
            if name not in ids:
                raise UserError(
                    f"{e.where}: label {name!r} is not one of the classes "
                    f"{list(names)} (config.labels, else the training rows')"
                )
            if problem_type == "multi_label":
                out[row, ids[name]] = 1.0
            else:
                out[row] = ids[name]
    return out


def to_features(
    examples: Sequence[Example],
    names: Sequence[str],
    problem_type: str,
    tokenizer: tokenizers.Tokenizer,
    max_seq_length: int,
) -> dict[str, np.ndarray]:
    """The encoder's inputs ([CLS] a [SEP] (b [SEP]), a pair cut longest-first) and "label"."""
    pair = bool(examples) and len(examples[0].texts) == 2
    firsts = [e.texts[0] for e in examples]
    seconds = [e.texts[1] for e in examples] if pair else None
    inputs = features.encode_texts(tokenizer, firsts, seconds, max_seq_length)
    return {**inputs, "label": label_array(examples, names, problem_type)}


def decide(outputs: np.ndarray, problem_type: str, threshold: float) -> np.ndarray:
    """Class ids [N] (single_label), bool decisions [N, classes] (multi_label), or scores [N]."""
    if problem_type == "regression":
        return outputs[:, 0]
    if problem_type == "multi_label":
        return probabilities(outputs, problem_type) > threshold
    return np.argmax(outputs, axis=-1)


def probabilities(outputs: np.ndarray, problem_type: str) -> np.ndarray:
    """Softmax over the classes (single_label) or a sigmoid per class (multi_label), float64."""
    logits = outputs.astype(np.float64)
    if problem_type == "multi_label":
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def prediction_rows(
    outputs: np.ndarray, names: Sequence[str], problem_type: str, threshold: float
) -> list[dict[str, Any]]:
    """One dict per row of model outputs, as transformers' text-classification pipeline
    reports a prediction: single_label {"label", "score", "probabilities"} (the most probable
    class, its probability, every class's); multi_label {"labels", "probabilities"} (the
    classes above `threshold`); regression {"score"}."""
    if problem_type == "regression":
        return [{"score": float(v)} for v in decide(outputs, problem_type, threshold)]
    decided = decide(outputs, problem_type, threshold)
    rows = []
    for chosen, p in zip(decided, probabilities(outputs, problem_type), strict=True):
        row: dict[str, Any] = {}
        if problem_type == "multi_label":
            row["labels"] = [n for n, on in zip(names, chosen, strict=True) if on]
        else:
            row["label"], row["score"] = names[chosen], float(p[chosen])
        row["probabilities"] = {n: float(v) for n, v in zip(names, p, strict=True)}
        rows.append(row)
    return rows
