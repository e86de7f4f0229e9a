"""Scores of a classifier or regressor on a labelled split (the classify job's evaluation).

Single-label: accuracy, micro F1 (equal to accuracy there), macro precision, recall and F1 (the
unweighted mean over every class of the task, a class never predicted nor present scoring 0, as
scikit-learn's `zero_division=0` with `labels=` all classes), each class's precision, recall
and F1 (keys "f1/NAME"), and the confusion matrix (rows: the true class, columns: predicted).
Multi-label: exact match (every class of the row right), micro and macro F1 and the per-class
scores over the (row, class) decisions. Regression: Pearson, Spearman and the mean squared
error. Pure numpy on host values; tests/test_classify.py checks them against scikit-learn.
"""

from collections.abc import Sequence

import numpy as np

from bert.tasks import metrics


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def _per_class(tp, predicted, gold, names: Sequence[str]) -> dict[str, float]:
    """Macro and per-class precision, recall and F1 from per-class counts."""
    precision, recall = _divide(tp, predicted), _divide(tp, gold)
    f1 = _divide(2 * tp, predicted + gold)
    out = {"precision_macro": float(precision.mean()), "recall_macro": float(recall.mean()),
           "f1_macro": float(f1.mean())}  # fmt: skip
    for i, name in enumerate(names):
        out |= {f"precision/{name}": float(precision[i]), f"recall/{name}": float(recall[i]),
                f"f1/{name}": float(f1[i])}  # fmt: skip
    return out


def confusion_matrix(predicted: np.ndarray, gold: np.ndarray, classes: int) -> np.ndarray:
    """int64 [classes, classes]: row the true class, column the predicted one."""
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (gold, predicted), 1)
    return matrix


def single_label(predicted: np.ndarray, gold: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Scores of class ids `predicted` against `gold` (both [rows], ids into `names`)."""
    matrix = confusion_matrix(predicted, gold, len(names))
    tp = np.diag(matrix).astype(np.float64)
    out = {"accuracy": float(tp.sum() / max(len(gold), 1))}
    out["f1_micro"] = out["accuracy"]
    return out | _per_class(tp, matrix.sum(axis=0), matrix.sum(axis=1), names)


def multi_label(predicted: np.ndarray, gold: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Scores of bool [rows, classes] decisions `predicted` against `gold`."""
    predicted, gold = predicted.astype(bool), gold.astype(bool)
    tp = (predicted & gold).sum(axis=0).astype(np.float64)
    guessed, present = predicted.sum(axis=0), gold.sum(axis=0)
    out = {"exact_match": float(np.all(predicted == gold, axis=1).mean())}
    out["precision_micro"] = float(tp.sum() / max(guessed.sum(), 1))
    out["recall_micro"] = float(tp.sum() / max(present.sum(), 1))
    out["f1_micro"] = float(2 * tp.sum() / max(guessed.sum() + present.sum(), 1))
    return out | _per_class(tp, guessed, present, names)


def regression(predicted: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlations and the mean squared error."""
    return {
        "pearson": metrics.pearson(predicted, gold),
        "spearman": metrics.spearman(predicted, gold),
        "mse": float(np.mean(np.square(predicted.astype(np.float64) - gold))),
    }
