"""The classification job (`config.task = "classify"`, configs/classify.py): a classifier or
regressor fine-tuned on the user's own labelled files (bert/tasks/classification.py), from a
checkpoint or from random weights, scored on its dev and test rows (bert/tasks/class_report.py),
each split's predictions written as JSON Lines.

The checkpoints record the task as "classify/<problem_type>", the class names and the
multi-label threshold, so that a workdir exports as BertForSequenceClassification with that
problem_type and is read back by bert.predict.
"""

import json

import numpy as np
from absl import logging

from bert import losses, pretrained
from bert.finetuning import finetune
from bert.finetuning.spec import EvalSet, Spec
from bert.heads import BertForSequenceClassification
from bert.jobs import settings
from bert.tasks import class_report, classification, table_files
from bert.tasks.classification import Example
from bert.tasks.features import ENCODER_INPUTS
from util import atomic, paths
from util.errors import UserError

TASK = "classify"


def file_columns(config) -> classification.Columns:
    """config's columns, problem type and file settings, checked."""
    texts = table_files.parse_columns(config.text_columns)
    labels = table_files.parse_columns(config.label_column)
    classification.check_columns(texts, labels, config.problem_type)
    return classification.Columns(texts, labels, config.problem_type, config.label_separator,
                                  config.file_format, config.header)  # fmt: skip


def read_splits(config, columns: classification.Columns) -> dict[str, list[Example]]:
    """{split: rows}: `settings.user_splits` of config's files (a test file may lack labels)."""

    def read(patterns: str, split: str) -> list[Example]:
        labelled = split != "test" or classification.has_labels(patterns, columns)
        return classification.read_examples(patterns, columns, labelled)

    return settings.user_splits(config, read, "CSV, TSV, JSONL or Parquet")


def _prediction_lines(examples, outputs, names, problem_type, threshold) -> list[str]:
    rows = classification.prediction_rows(outputs, names, problem_type, threshold)
    lines = []
    for example, row in zip(examples, rows, strict=True):
        row = {"where": example.where, **row}
        if example.label is not None:
            row["gold"] = list(example.label) if problem_type == "multi_label" else example.label
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    return lines


def _write_confusion(path: paths.Path, matrix: np.ndarray, names) -> None:
    lines = ["true\\predicted\t" + "\t".join(names) + "\n"]
    lines += [
        f"{name}\t" + "\t".join(map(str, row)) + "\n"
        for name, row in zip(names, matrix, strict=True)
    ]
    atomic.write_atomically(path, "".join(lines))


def _eval_set(split, examples, feats, names, config, out_dir) -> EvalSet:
    problem, threshold = config.problem_type, config.threshold
    labelled = bool(examples) and examples[0].label is not None

    def finish(outputs: np.ndarray, write: bool) -> dict[str, float]:
        gold = feats["label"]
        if write:
            lines = _prediction_lines(examples, outputs, names, problem, threshold)
            atomic.write_atomically(out_dir / f"{split}.jsonl", "".join(lines))
        if not labelled:
            return {}
        decided = classification.decide(outputs, problem, threshold)
        if problem == "regression":
            return class_report.regression(decided, gold)
        if problem == "multi_label":
            return class_report.multi_label(decided, gold > 0.5, names)
        if write:
            matrix = class_report.confusion_matrix(decided, gold, len(names))
            _write_confusion(out_dir / f"{split}_confusion.tsv", matrix, names)
        return class_report.single_label(decided, gold, names)

    return EvalSet(split, {k: feats[k] for k in ENCODER_INPUTS}, finish)


def _loss(problem_type: str):
    if problem_type == "regression":
        return lambda outputs, batch: losses.regression_sums(outputs, batch["label"])
    if problem_type == "multi_label":
        return lambda outputs, batch: losses.multi_label_sums(outputs, batch["label"])
    return lambda outputs, batch: losses.classification_sums(outputs, batch["label"])


def run(config, workdir: str, encoder: pretrained.Pretrained | None = None) -> dict:
    """Fine-tunes and evaluates; returns {"step": ..., split: {metric: value}}.

    Args:
      encoder: the encoder to start from, in memory; None: config.init_from's (or random).
    """
    columns = file_columns(config)
    if not 0.0 < config.threshold < 1.0:
        raise UserError(f"config.threshold={config.threshold} must lie between 0 and 1")
    loaded = settings.encoder(config, encoder)
    splits = read_splits(config, columns)
    names = classification.label_names(splits["train"], config.labels, config.problem_type)
    out_dir = paths.path(workdir) / "predictions"
    arrays, evals = {}, []
    for split, examples in splits.items():
        limit = config.train_limit if split == "train" else config.eval_limit
        examples = settings.limited(examples, limit, config)
        logging.info("%s %s: %d rows", TASK, split, len(examples))
        arrays[split] = classification.to_features(
            examples, names, config.problem_type, loaded.tokenizer, config.max_seq_length
        )
        if split != "train" and examples:
            evals.append(_eval_set(split, examples, arrays[split], names, config, out_dir))
    model = BertForSequenceClassification(loaded.config, max(len(names), 1))
    spec = Spec(f"{TASK}/{config.problem_type}", model, _loss(config.problem_type), ("label",),
                arrays["train"], evals, labels=names,
                recorded={"threshold": config.threshold})  # fmt: skip
    return finetune.run(spec, loaded, settings.finetuning(config), workdir)
