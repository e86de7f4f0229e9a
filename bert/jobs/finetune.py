"""Fine-tuning, shared by the GLUE, SQuAD and NER jobs.

A job loads the pretrained encoder with its tokenizer (`load_pretrained`), turns its data into
feature arrays, and hands `run` a `Spec`: the task's name, the model with its head, the loss
over named inputs and labels, the training arrays and the evaluation sets. `run` gives them to
the run skeleton (bert/training/runner.py) with AdamW/LAMB, warm-up and linear decay, and a
prediction step: every evaluation set turns the model's outputs into its metrics and writes its
own predictions.

The training order is a seeded permutation per epoch (`RowOrder`), so step `s` always sees the
same rows and a resumed run is identical to an uninterrupted one. With length buckets, rows of
similar lengths are batched together (`config.train.group_by_length`), as HF Trainer's
`group_by_length` does, so that most batches need a short bucket.

Batches are padded only to the smallest length bucket that holds their longest row (multiples
of `config.pad_to_multiple_of`, spaced out geometrically beyond four of them, at most
max_seq_length; `features.bucket_length`), each text of a model taking several (a bi-encoder's
query and passage) to its own: XLA compiles one shape per bucket
and little arithmetic is spent on padding. The job knows every step's rows in advance, so the
steps of all the buckets a run needs (and the evaluation's) compile in the background while the
first steps run (bert/training/ahead.py). A training batch keeps its rows (the bucket follows
from them, so a step's shape is as fixed as its rows); prediction sorts the rows by length first
and puts each output back in its row's place. The input mask keeps padding out of every row's
result, so bucketing changes no prediction beyond float rounding.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging

from bert import pretrained
from bert.model import BertConfig
from bert.tasks import features
from bert.tasks.features import ENCODER_INPUTS
from bert.training import objectives, optim, runner, sharding
from input_pipeline.errors import UserError

Batch = dict[str, Any]
Sums = dict[str, tuple[jax.Array, jax.Array]]
# config.model fields that may differ from the checkpoint's own model config.
MODEL_OVERRIDES = ("dtype", "attention_impl", "hidden_dropout", "attention_dropout")


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


def take_rows(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in arrays.items()}


def limit_rows(arrays: dict[str, np.ndarray], limit: int) -> dict[str, np.ndarray]:
    """The first `limit` rows (all when `limit` is 0)."""
    return arrays if limit <= 0 else {k: v[:limit] for k, v in arrays.items()}


@dataclasses.dataclass(frozen=True)
class RowOrder:
    """How many steps, and which rows each step takes.

    Epoch e is the seeded permutation (seed, e) of the rows, cut into batches. With
    `group_batches` > 1 and row `lengths`, each run of that many batches of the permutation is
    sorted by length before it is cut, and the epoch's batches are then shuffled with the same
    generator: a batch holds rows of similar lengths (little padding in a length bucket) while
    every row is still seen once per epoch in a seeded order.
    """

    num_rows: int
    batch_size: int
    total_steps: int
    seed: int
    lengths: np.ndarray | None = None
    group_batches: int = 0
    # the last epoch's batches, kept so that each step does not recompute its epoch's order
    _last: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        return self.num_rows // self.batch_size

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """[steps_per_epoch, batch_size] row indices of epoch `epoch`'s batches, in order."""
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(self.num_rows)[: self.steps_per_epoch * self.batch_size]
        if self.group_batches <= 1 or self.lengths is None:
            return order.reshape(-1, self.batch_size)
        span = self.group_batches * self.batch_size
        groups = np.split(order, range(span, len(order), span))
        by_length = [g[np.argsort(-self.lengths[g], kind="stable")] for g in groups]
        batches = np.concatenate(by_length).reshape(-1, self.batch_size)
        return batches[rng.permutation(len(batches))]

    def rows(self, step: int) -> np.ndarray:
        """Row indices of the global batch of `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch not in self._last:
            self._last.clear()
            self._last[epoch] = self.epoch_batches(epoch)
        return self._last[epoch][position]


def make_row_order(
    t: ml_collections.ConfigDict, num_rows: int, seed: int, lengths: np.ndarray | None = None
) -> RowOrder:
    """Steps from config.train.steps, or from train.epochs (whole batches; the rest dropped).

    `lengths` (each row's used length) lets config.train.group_by_length batch rows of similar
    lengths together.
    """
    if num_rows < t.batch_size:
        raise UserError(
            f"{num_rows} training examples, fewer than config.train.batch_size={t.batch_size}"
        )
    if t.group_by_length < 0:
        raise UserError(f"config.train.group_by_length={t.group_by_length} must be 0 or more")
    steps = t.steps if t.steps > 0 else math.ceil(t.epochs * (num_rows // t.batch_size))
    if steps <= 0:
        raise UserError(f"config.train.epochs={t.epochs} gives no steps; set train.steps")
    return RowOrder(num_rows, t.batch_size, steps, seed, lengths, t.group_by_length)


def _host_share(rows: np.ndarray) -> np.ndarray:
    """This process's contiguous share of a global batch's rows."""
    return rows.reshape(jax.process_count(), -1)[jax.process_index()]


def mask_keys(keys: Sequence[str]) -> list[str]:
    """The input masks among `keys` (one per text a model takes)."""
    return [k for k in keys if k.endswith("input_mask")]


def lengths_of(arrays: dict[str, np.ndarray], multiple: int) -> np.ndarray:
    """Each row's used length (its full length when `multiple` is 0 or there is no mask)."""
    masks = [arrays[k] for k in mask_keys(list(arrays))]
    if multiple <= 0 or not masks:
        rows, full = next(iter(arrays.values())).shape[:2]
        return np.full(rows, full, np.int64)
    return features.used_lengths(masks)


def lengths_by_text(
    arrays: dict[str, np.ndarray], multiple: int, ratio: float
) -> dict[str, np.ndarray]:
    """What each row's length bucket must hold, per text: input mask key -> [rows] lengths.

    The texts of a model taking several (a bi-encoder's sides) get their own lengths when one's
    mean is at least `ratio` times another's (a question beside a paragraph); otherwise they
    share each row's longest, so that a batch compiles one shape and takes one encoder pass.
    """
    each = {m: lengths_of({m: arrays[m]}, multiple) for m in mask_keys(list(arrays))}
    means = [float(np.mean(n)) for n in each.values()]
    if len(each) > 1 and max(means) < ratio * max(min(means), 1.0):
        shared = np.max(np.stack(list(each.values())), axis=0)  # [rows]
        each = dict.fromkeys(each, shared)
    return each


def _plan(inputs: dict[str, np.ndarray], batch_size: int, multiple: int):
    """(rows, length) of each prediction batch: with `multiple` 0 every batch at the full length
    in the rows' order; otherwise the rows by length, each batch cut to its length bucket."""
    num_rows, full = inputs["input_ids"].shape[:2]
    lengths = lengths_of(inputs, multiple)
    order = np.argsort(lengths, kind="stable") if multiple > 0 else np.arange(num_rows)
    for start in range(0, num_rows, batch_size):
        rows = order[start : start + batch_size]
        yield rows, features.bucket_length(int(lengths[rows].max()), multiple, full)


def _prediction_batch(inputs, rows: np.ndarray, length: int, batch_size: int) -> Batch:
    """This host's share of a prediction batch, cut to `length`; the last batch filled up with
    copies of its first row."""
    filled = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
    return features.cut_length(take_rows(inputs, _host_share(filled)), length,
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


@dataclasses.dataclass(frozen=True)
class _TrainBatches:
    """The training batches of a run: each step's rows (`order`), cut to their length buckets.

    Attributes:
      text_lengths: input mask key -> each row's length to hold (lengths_by_text).
      arrays: the training arrays (inputs and labels), one row per feature, uncut.
      full: the per-token arrays' uncut length.
    """

    order: RowOrder
    text_lengths: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray]
    full: int
    multiple: int
    mesh: Any

    def buckets_at(self, step: int) -> dict[str, int]:
        rows = self.order.rows(step)  # the global batch: every host cuts it to the same lengths
        return {m: features.bucket_length(int(n[rows].max()), self.multiple, self.full)
                for m, n in self.text_lengths.items()}  # fmt: skip

    def local(self, step: int) -> dict[str, np.ndarray]:
        """This host's share of step `step`'s batch, each text cut to its bucket."""
        local = take_rows(self.arrays, _host_share(self.order.rows(step)))
        buckets = self.buckets_at(step)
        return features.cut_texts(local, buckets, self.full) if buckets else local

    def batches(self, start: int) -> Callable[[int], Batch]:
        """step -> its global batch (runner.Run.batches)."""
        return lambda step: sharding.global_batch(self.local(step), self.mesh)

    def shapes(self, start: int) -> list[Batch]:
        """The abstract global batches from `start` on, one per bucket combination, in the order
        first needed (runner.Run.batch_shapes)."""
        first = {}  # each bucket combination -> the first step that needs it
        for at in range(start, self.order.total_steps):
            first.setdefault(tuple(sorted(self.buckets_at(at).items())), at)
        return [sharding.abstract_global_batch(self.local(at), self.mesh) for at in first.values()]


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
    multiple = config.pad_to_multiple_of
    text_lengths = lengths_by_text(inputs, multiple, config.text_bucket_ratio)
    # the order groups by the rows' real lengths, whatever the padding: the same rows each step
    num_rows = len(inputs[spec.input_keys[0]])
    order = make_row_order(t, num_rows, config.seed, lengths_of(inputs, multiple=1))
    warmup = round(t.warmup_proportion * order.total_steps)
    schedule = optim.learning_rate_schedule(t.learning_rate, warmup, order.total_steps)
    tx = optim.make_optimizer(t.optimizer, schedule, t.weight_decay, t.b1, t.b2, t.eps, t.clip_norm)
    objective = objectives.finetuning(spec.model, spec.loss, spec.input_keys, spec.label_keys)
    train_arrays = {k: spec.train[k] for k in objective.batch_keys}

    full = train_arrays[spec.input_keys[0]].shape[1]
    train = _TrainBatches(order, text_lengths, train_arrays, full, multiple, mesh)

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
