"""Fine-tuning, shared by the GLUE, SQuAD and NER jobs.

A job loads the pretrained encoder with its tokenizer (`load_pretrained`), turns its data into
feature arrays, and hands `run` a `Spec`: the task's name, the model with its head, the loss
over named inputs and labels, the training arrays and the evaluation sets. `run` gives them to
the run skeleton (bert/training/runner.py) with AdamW/LAMB, warm-up and linear decay, and a
prediction step: every evaluation set turns the model's outputs into its metrics and writes its
own predictions.

Training batches come from bert/jobs/batches.py: a seeded random order per epoch, so a resumed
run is identical to an uninterrupted one, each batch padded only to the smallest length bucket
that holds its longest row (`config.pad_to_multiple_of`, spaced out geometrically; each text of
a bi-encoder to its own), or packed whole into rows (`config.train.pack`): a per-token task's
(NER) sentences, or a bi-encoder's texts of every side into shared rows. The job knows every
step's shape in advance, so the steps of all the shapes a run needs (and the evaluation's)
compile in the background while the first steps run (bert/training/ahead.py). Prediction
sorts the rows by length, batches them in length buckets and puts each output back in its
row's place; the input mask keeps padding out of every row's result, so bucketing changes no
prediction beyond float rounding.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging

from bert import pretrained
from bert.jobs import batches
from bert.model import BertConfig
from bert.tasks import features, packing
from bert.tasks.features import ENCODER_INPUTS
from bert.training import objectives, optim, runner, sharding
from input_pipeline.errors import UserError

Batch = dict[str, Any]
Sums = dict[str, tuple[jax.Array, jax.Array]]
# config.model fields that may differ from the checkpoint's own model config.
MODEL_OVERRIDES = ("dtype", "attention_impl", "hidden_dropout", "attention_dropout", "initializer")
# a packed bi-encoder's rows per step follow from the run's first this many steps
# (first-fit of 32-48 texts takes well under a millisecond a step)
PACK_PLAN_STEPS = 500


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


def load_pretrained(config: ml_collections.ConfigDict) -> pretrained.Pretrained:
    """The checkpoint in `config.init_from` with its tokenizer, and config.model's overrides."""
    if not config.init_from:
        raise UserError(
            "config.init_from is empty: give a checkpoint (HF directory, Google TF checkpoint, "
            "or a workdir of ours)"
        )
    loaded = pretrained.load(config.init_from, config.tokenizer)
    overrides = {name: config.model[name] for name in MODEL_OVERRIDES}
    fields = {**dataclasses.asdict(loaded.config), **overrides}
    try:
        return dataclasses.replace(loaded, config=BertConfig.from_dict(fields))
    except ValueError as e:  # the model library names the field as model.NAME
        raise UserError(f"config.{e}") from None


def limit_rows(arrays: dict[str, np.ndarray], limit: int) -> dict[str, np.ndarray]:
    """The first `limit` rows (all when `limit` is 0)."""
    return arrays if limit <= 0 else {k: v[:limit] for k, v in arrays.items()}


def _plan(inputs: dict[str, np.ndarray], batch_size: int, multiple: int):
    """(rows, length) of each prediction batch: with `multiple` 0 every batch at the full length
    in the rows' order; otherwise the rows by length, each batch cut to its length bucket."""
    num_rows, full = inputs["input_ids"].shape[:2]
    lengths = batches.lengths_of(inputs, multiple)
    order = np.argsort(lengths, kind="stable") if multiple > 0 else np.arange(num_rows)
    for start in range(0, num_rows, batch_size):
        rows = order[start : start + batch_size]
        yield rows, features.bucket_length(int(lengths[rows].max()), multiple, full)


def _prediction_batch(inputs, rows: np.ndarray, length: int, batch_size: int) -> Batch:
    """This host's share of a prediction batch, cut to `length`; the last batch filled up with
    copies of its first row."""
    filled = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
    return features.cut_length(batches.take_rows(inputs, batches.host_share(filled)), length,
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


def _evaluate(spec: Spec, predict_step, params, config, mesh) -> dict[str, dict[str, float]]:
    write = jax.process_index() == 0
    results = {}
    for eval_set in spec.evals:
        multiple = config.pad_to_multiple_of if eval_set.bucketed else 0
        outputs = predict(
            predict_step, params, eval_set.inputs, config.eval_batch_size, mesh, multiple
        )
        results[eval_set.name] = eval_set.finish(outputs, write)
        logging.info("%s %s: %s", spec.task, eval_set.name, results[eval_set.name])
    return results


def _check_config(config: ml_collections.ConfigDict, mesh) -> int:
    per_host = sharding.per_host_batch(config.train, mesh)
    divisor = sharding.batch_divisor(mesh) * jax.process_count()
    if config.pad_to_multiple_of < 0:
        raise UserError(
            f"config.pad_to_multiple_of={config.pad_to_multiple_of} must be 0 (no buckets) or more"
        )
    if config.eval_batch_size % divisor:
        raise UserError(
            f"config.eval_batch_size={config.eval_batch_size} must be a multiple of {divisor} "
            "(data x fsdp devices x hosts)"
        )
    return per_host


def _check_packing(spec: Spec, t: ml_collections.ConfigDict) -> None:
    if spec.pack_fill is None and spec.packed_model is None:
        raise UserError(
            f"config.train.pack: the {spec.task} job cannot pack its rows (only a per-token "
            "task, ner, and the bi-encoder, embeddings, can); set config.train.pack=False"
        )
    if t.group_by_length > 1:
        raise UserError(
            f"config.train.pack packs random batches; config.train.group_by_length="
            f"{t.group_by_length} would sort them by length: set it to 0"
        )
    if t.pack_length < 1:
        raise UserError(f"config.train.pack_length={t.pack_length} must be 1 or more (tokens)")


def _evaluator_maker(spec: Spec, config: ml_collections.ConfigDict, mesh) -> Callable:
    """runner.Run.make_evaluate: (abstract params, compiler) -> (params -> every split's
    metrics), the prediction step of every evaluation bucket compiled ahead."""
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
            multiple = config.pad_to_multiple_of if e.bucketed else 0
            shapes += prediction_shapes(e.inputs, config.eval_batch_size, mesh, multiple)
        step = compiler.wrap(jitted, params, shapes)
        return lambda current: _evaluate(spec, step, current, config, mesh)

    return make_evaluate


def _packed_sides(
    spec: Spec, config, order: batches.RowOrder, train_arrays, rows_multiple: int, mesh
):
    """(the objective, the batches) of a bi-encoder with config.train.pack: its sides packed in
    groups (batches.side_groups), each into rows that hold its longest text (so that one long
    text does not change a step's shape), as many as most of the first PACK_PLAN_STEPS steps
    need, and a second shape for the fuller ones (batches.rows_to_hold)."""
    t, multiple = config.train, config.pad_to_multiple_of
    full = train_arrays[spec.input_keys[0]].shape[1]
    sides = tuple(spec.input_keys[i : i + 3] for i in range(0, len(spec.input_keys), 3))
    each = np.stack([batches.lengths_of({k[2]: train_arrays[k[2]]}, 1) for k in sides], axis=1)
    groups = batches.side_groups(each, config.text_bucket_ratio)
    row_lengths, num_rows = [], []
    for group in groups:
        longest = features.bucket_length(int(each[:, group].max()), multiple, full)
        row_lengths.append(min(max(t.pack_length, longest), full))
        num_rows.append(batches.rows_to_hold(order, each[:, group], row_lengths[-1],
                                             rows_multiple, PACK_PLAN_STEPS))  # fmt: skip
    keys = batches.packed_keys(len(groups))
    objective = objectives.finetuning(spec.packed_model, spec.loss, keys, spec.label_keys)
    return objective, batches.PackedSides(
        order, each, train_arrays, sides, spec.label_keys, groups, tuple(row_lengths),
        tuple(num_rows), rows_multiple, multiple, mesh,
    )  # fmt: skip


def train_batches(spec: Spec, config, order: batches.RowOrder, lengths: np.ndarray, mesh):
    """(the objective, the run's training batches): packed (config.train.pack), else each
    step's rows cut to their length buckets. `lengths`: each row's used length."""
    t, multiple = config.train, config.pad_to_multiple_of
    train_arrays = {k: spec.train[k] for k in spec.input_keys + spec.label_keys}
    full = train_arrays[spec.input_keys[0]].shape[1]
    rows_multiple = sharding.batch_divisor(mesh) * jax.process_count() * t.accumulation_steps
    if t.pack:
        _check_packing(spec, t)
        if spec.packed_model is not None:
            return _packed_sides(spec, config, order, train_arrays, rows_multiple, mesh)
        objective = objectives.finetuning(
            spec.model, spec.loss, spec.input_keys, spec.label_keys, ("position_ids",)
        )
        row_length = min(t.pack_length, full)
        num_rows = packing.rows_for(lengths, t.batch_size, row_length, rows_multiple)
        return objective, batches.PackedBatches(
            order, lengths, train_arrays, spec.pack_fill, rows_multiple, num_rows, row_length,
            multiple, mesh,
        )  # fmt: skip
    objective = objectives.finetuning(spec.model, spec.loss, spec.input_keys, spec.label_keys)
    inputs = {k: spec.train[k] for k in spec.input_keys}
    text_lengths = batches.lengths_by_text(inputs, multiple, config.text_bucket_ratio)
    return objective, batches.TrainBatches(order, text_lengths, train_arrays, full, multiple, mesh)


def run(
    spec: Spec, encoder: pretrained.Pretrained, config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
    """Fine-tunes `spec` from the pretrained encoder, resuming from `workdir`'s checkpoint.

    Args:
      encoder: the pretrained model and tokenizer (`load_pretrained`); its encoder parameters
        start the model, its tokenizer is recorded in the checkpoints.
      config: the job's config (configs/glue.py etc.: train, mesh, eval_batch_size, seed).

    Returns:
      {"step": last step, split: {metric: value}} (also written to workdir/eval_results.json).
    """
    mesh = sharding.make_mesh(config.mesh)
    _check_config(config, mesh)
    t = config.train
    inputs = {k: spec.train[k] for k in spec.input_keys}
    # the order groups by the rows' real lengths, whatever the padding: the same rows each step
    lengths = batches.lengths_of(inputs, multiple=1)
    order = batches.make_row_order(t, len(lengths), config.seed, lengths)
    warmup = round(t.warmup_proportion * order.total_steps)
    schedule = optim.learning_rate_schedule(t.learning_rate, warmup, order.total_steps)
    tx = optim.make_optimizer(t.optimizer, schedule, t.weight_decay, t.b1, t.b2, t.eps, t.clip_norm)
    objective, train = train_batches(spec, config, order, lengths, mesh)
    job = runner.Run(
        task=spec.task,
        model=spec.model,
        model_config=encoder.config,
        tokenizer=str(encoder.tokenizer.path),
        objective=objective,
        tx=tx,
        schedule=schedule,
        total_steps=order.total_steps,
        seq_length=spec.train[spec.input_keys[0]].shape[1],
        initial_params=lambda: {"bert": encoder.encoder},
        batches=train.batches,
        make_evaluate=_evaluator_maker(spec, config, mesh),
        labels=spec.labels,
        recorded=spec.recorded,
        batch_shapes=train.shapes,
    )
    return runner.train_and_evaluate(job, config, workdir, mesh)
