"""What a fine-tuning job hands the run (`Spec`): the task's name, the model with its head, the
loss over named inputs and labels, the training arrays and the evaluation sets (`EvalSet`)."""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from bert.tasks.features import ENCODER_INPUTS

Batch = dict[str, Any]
Sums = dict[str, tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """One split to evaluate or predict.

    Attributes:
      name: the split ("dev", "dev_matched", "test"); its metrics are reported under it.
      inputs: the model's inputs (the Spec's input_keys), one row per feature.
      finish: (outputs, write) -> metrics. `outputs` are the model's outputs for every row as
        numpy arrays; `write` is True on the process that writes files (predictions).
        Per-token outputs are zero beyond a row's length bucket.
      bucketed: False to predict at the full length (a decoder that looks at padding
        positions, such as SQuAD's n-best over every position, needs their real outputs).
    """

    name: str
    inputs: dict[str, np.ndarray]
    finish: Callable[[Any, bool], dict[str, float]]
    bucketed: bool = True


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a job hands `run`.

    Attributes:
      task: the task's name ("glue/sst2", "squad", "ner"), recorded in checkpoints.
      model: a head model (bert/heads.py) over the encoder, called as
        model(*inputs in input_keys order, deterministic=...).
      loss: (outputs, batch) -> {name: (sum, count)} with a "loss" entry (bert/losses.py).
      label_keys: the batch keys holding labels; the first one counts the loss's denominator.
      train: input_keys and label_keys arrays, one row per training feature.
      evals: the splits evaluated at the end (and every train.eval_every steps).
      input_keys: the batch keys the model takes, in order (pairs or several texts for a
        bi-encoder take more).
      labels: the class names of a classifier or tagger, recorded in the checkpoints.
      recorded: more settings recorded in the checkpoints (runner.Run.recorded).
      eval_model, eval_input_keys: the model (same parameters) and batch keys the evaluation
        sets are predicted with, where they differ from training's (a bi-encoder trains on
        pairs and embeds single sentences); None: model and input_keys.
      pack_fill: for a model whose loss is per token and that takes `position_ids` (NER's
        tagger): the value of unused positions of each packed training array not filled with
        0 (its "no label"), so that config.train.pack can pack rows; None: it cannot.
      packed_model: for a bi-encoder (bert/biencoder.py; input_keys are ids, segments, mask
        per side), the same model taking packed groups of sides (batches.PackedSides), so that
        config.train.pack can pack its texts; None: it cannot.
      row_texts: each training row's texts as ids ([rows, texts], equal ids for equal texts):
        given, no batch holds a text twice (order.RowOrder's `texts`); None: random batches.
      mini_batch_size: >0: the model's outputs and their gradient computed this many rows at
        a time, the loss over the whole batch (gradcache.py); 0: the batch in one pass.
    """

    task: str
    model: nn.Module
    loss: Callable[[Any, Batch], Sums]
    label_keys: tuple[str, ...]
    train: dict[str, np.ndarray]
    evals: Sequence[EvalSet]
    input_keys: tuple[str, ...] = ENCODER_INPUTS
    labels: tuple[str, ...] = ()
    recorded: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_model: nn.Module | None = None
    eval_input_keys: tuple[str, ...] | None = None
    pack_fill: dict[str, int] | None = None
    packed_model: nn.Module | None = None
    row_texts: np.ndarray | None = None
    mini_batch_size: int = 0


def limit_rows(arrays: dict[str, np.ndarray], limit: int) -> dict[str, np.ndarray]:
    """The first `limit` rows (all when `limit` is 0)."""
    return arrays if limit <= 0 else {k: v[:limit] for k, v in arrays.items()}
