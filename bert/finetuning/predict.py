"""Prediction and evaluation: every evaluation set's rows sorted by length, batched in length
buckets, and each output put back in its row's place; the input mask keeps padding out of every
row's result, so bucketing changes no prediction beyond float rounding. Each set then turns the
outputs into its metrics and writes its predictions (spec.EvalSet)."""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from bert.finetuning import batches, buckets
from bert.finetuning.spec import Spec
from bert.training import sharding

Batch = dict[str, Any]


def _plan(inputs: dict[str, np.ndarray], batch_size: int, multiple: int):
    """(rows, length) of each prediction batch: with `multiple` 0 every batch at the full length
    in the rows' order; otherwise the rows by length, each batch cut to its length bucket."""
    num_rows, full = inputs["input_ids"].shape[:2]
    lengths = buckets.lengths_of(inputs, multiple)
    order = np.argsort(lengths, kind="stable") if multiple > 0 else np.arange(num_rows)
    for start in range(0, num_rows, batch_size):
        rows = order[start : start + batch_size]
        yield rows, buckets.bucket_length(int(lengths[rows].max()), multiple, full)


def _prediction_batch(inputs, rows: np.ndarray, length: int, batch_size: int) -> Batch:
    """This host's share of a prediction batch, cut to `length`; the last batch filled up with
    copies of its first row."""
    filled = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
    return buckets.cut_length(batches.take_rows(inputs, batches.host_share(filled)), length,
                               inputs["input_ids"].shape[1])  # fmt: skip


def prediction_shapes(
    inputs: dict[str, np.ndarray], batch_size: int, mesh, multiple: int = 0
) -> list[Batch]:
    """The abstract global batches `predict` will run, one per length bucket, shortest first."""
    shapes = {}
    for rows, length in _plan(inputs, batch_size, multiple):
        if length not in shapes:
            local = _prediction_batch(inputs, rows, length, batch_size)
            shapes[length] = sharding.abstract_global_batch(local, mesh)
    return list(shapes.values())


def predict(
    predict_step: Callable,
    params: Any,
    inputs: dict[str, np.ndarray],
    batch_size: int,
    mesh,
    multiple: int = 0,
) -> Any:
    """The model's outputs for every row of `inputs` (numpy), in `batch_size` global batches.

    Args:
      multiple: with 0 every batch is padded to the full length, in the rows' order; otherwise
        the rows go by length and each batch is cut to its length bucket (a multiple of it).
        A per-token output is zero beyond its batch's bucket.

    The last batch is filled up with copies of its first row, whose outputs are dropped.
    """
    num_rows = inputs["input_ids"].shape[0]
    shapes = jax.eval_shape(
        predict_step, params, {k: jax.ShapeDtypeStruct((batch_size, *v.shape[1:]), v.dtype)
                               for k, v in inputs.items()},
    )  # fmt: skip
    outputs = jax.tree.map(lambda s: np.zeros((num_rows, *s.shape[1:]), s.dtype), shapes)
    for rows, length in _plan(inputs, batch_size, multiple):
        local = _prediction_batch(inputs, rows, length, batch_size)
        got = jax.device_get(predict_step(params, sharding.global_batch(local, mesh)))

        def put(out: np.ndarray, part: np.ndarray, rows=rows) -> None:
            out[(rows, *(slice(0, n) for n in part.shape[1:]))] = part[: len(rows)]

        jax.tree.map(put, outputs, got)
    return outputs


def _evaluate(spec: Spec, predict_step, params, multiple: int, batch_size: int, mesh) -> dict:
    """{split: its metrics} of every evaluation set of `spec`."""
    write = jax.process_index() == 0
    results = {}
    for eval_set in spec.evals:
        outputs = predict(predict_step, params, eval_set.inputs, batch_size, mesh,
                          multiple if eval_set.bucketed else 0)  # fmt: skip
        results[eval_set.name] = eval_set.finish(outputs, write)
        if results[eval_set.name]:  # a split without labels (test) has predictions only
            logging.info("%s %s: %s", spec.task, eval_set.name, results[eval_set.name])
        else:
            rows = jax.tree.leaves(outputs)[0].shape[0]
            logging.info("%s %s: %d rows predicted", spec.task, eval_set.name, rows)
    return results


def evaluator(spec: Spec, multiple: int, batch_size: int, mesh) -> Callable:
    """runner.Run.make_evaluate: (abstract params, compiler) -> (params -> every split's
    metrics), the prediction step of every evaluation bucket compiled ahead.

    Args:
      multiple: the length buckets (config.pad_to_multiple_of); 0: every batch at full length.
      batch_size: rows per prediction batch, all hosts together (config.eval_batch_size).
    """
    eval_model = spec.eval_model or spec.model
    eval_keys = spec.eval_input_keys or spec.input_keys

    def predict_step(params, batch):
        return eval_model.apply({"params": params}, *(batch[k] for k in eval_keys))

    def make_evaluate(params, compiler):
        jitted = jax.jit(
            predict_step,
            in_shardings=(jax.tree.map(lambda p: p.sharding, params),
                          sharding.batch_shardings(mesh, eval_keys)),
            out_shardings=sharding.replicated(mesh),
        )  # fmt: skip
        shapes = []
        for e in spec.evals:
            shapes += prediction_shapes(e.inputs, batch_size, mesh, multiple if e.bucketed else 0)
        step = compiler.wrap(jitted, params, shapes)
        return lambda current: _evaluate(spec, step, current, multiple, batch_size, mesh)

    return make_evaluate
