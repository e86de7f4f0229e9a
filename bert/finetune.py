"""The fine-tuning loop shared by GLUE, SQuAD and NER.

A job (bert/glue_job.py, squad_job.py, ner_job.py) loads the pretrained encoder and its
tokenizer (`load_pretrained`), turns its data into feature arrays, and hands `run` a `Task`:
the model with its head, the loss, the training arrays and the evaluation sets. `run` does the
rest with the pre-training machinery: the device mesh and sharded state, the jitted train step
(exact gradient accumulation, bf16 compute on accelerators), Orbax checkpoints with resume,
a save on SIGTERM, TensorBoard and console metrics with progress, then the evaluation, whose
metrics go to `eval_results.json` and TensorBoard and whose predictions each evaluation set
writes itself.

Training order is a seeded permutation per epoch, so step `s` always sees the same rows and a
resumed run is identical to an uninterrupted one.
"""

import dataclasses
import math
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging

from bert import checkpoint, encode, loop, losses, optim, reporting, sharding, train
from bert.model import BertConfig

Batch = dict[str, Any]
Sums = dict[str, tuple[jax.Array, jax.Array]]
INPUT_KEYS = ("input_ids", "segment_ids", "input_mask")
# config.model fields that may differ from the checkpoint's own model config.
MODEL_OVERRIDES = ("dtype", "attention_impl", "hidden_dropout", "attention_dropout")


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """One split to evaluate or predict.

    Attributes:
      name: the split ("dev", "dev_matched", "test"); its metrics are reported under it.
      inputs: model inputs (INPUT_KEYS), one row per feature.
      finish: (outputs, write) -> metrics. `outputs` are the model's outputs for every row as
        numpy arrays; `write` is True on the process that writes files (predictions).
    """

    name: str
    inputs: dict[str, np.ndarray]
    finish: Callable[[Any, bool], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Task:
    """What a job hands the loop.

    Attributes:
      name: the task, recorded in checkpoints (a workdir is not reused for another task).
      model: a head model (bert/heads.py) over the encoder, called as
        model(input_ids, segment_ids, input_mask, deterministic).
      loss: (outputs, batch) -> {name: (sum, count)} with a "loss" entry (bert/losses.py).
      label_keys: the batch keys holding labels; the first one counts the loss's denominator.
      train: INPUT_KEYS and label_keys arrays, one row per training feature.
      evals: the splits evaluated at the end (and every train.eval_every steps).
    """

    name: str
    model: nn.Module
    loss: Callable[[Any, Batch], Sums]
    label_keys: tuple[str, ...]
    train: dict[str, np.ndarray]
    evals: Sequence[EvalSet]


def load_pretrained(config: ml_collections.ConfigDict) -> encode.Encoder:
    """The encoder in `config.init_from` with its tokenizer, and config.model's overrides."""
    if not config.init_from:
        raise ValueError(
            "config.init_from is empty: give a checkpoint (HF directory, Google TF checkpoint, "
            "or a pre-training workdir of ours)"
        )
    pretrained = encode.load_encoder(config.init_from, config.tokenizer or None)
    overrides = {name: config.model[name] for name in MODEL_OVERRIDES}
    fields = {**dataclasses.asdict(pretrained.config), **overrides}
    return dataclasses.replace(pretrained, config=BertConfig.from_dict(fields))


def take_rows(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in arrays.items()}


def limit_rows(arrays: dict[str, np.ndarray], limit: int) -> dict[str, np.ndarray]:
    """The first `limit` rows (all when `limit` is 0)."""
    return arrays if limit <= 0 else {k: v[:limit] for k, v in arrays.items()}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How many steps, and which rows each step takes."""

    num_rows: int
    batch_size: int
    total_steps: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return self.num_rows // self.batch_size

    def rows(self, step: int) -> np.ndarray:
        """Row indices of the global batch of `step`: epoch e is permutation(seed, e)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng((self.seed, epoch)).permutation(self.num_rows)
        return order[position * self.batch_size : (position + 1) * self.batch_size]


def make_schedule(t: ml_collections.ConfigDict, num_rows: int, seed: int) -> Schedule:
    """Steps from config.train.steps, or from train.epochs (whole batches; the rest dropped)."""
    if num_rows < t.batch_size:
        raise ValueError(
            f"{num_rows} training examples, fewer than config.train.batch_size={t.batch_size}"
        )
    steps = t.steps if t.steps > 0 else math.ceil(t.epochs * (num_rows // t.batch_size))
    if steps <= 0:
        raise ValueError(f"config.train.epochs={t.epochs} gives no steps; set train.steps")
    return Schedule(num_rows, t.batch_size, steps, seed)


def _host_share(rows: np.ndarray) -> np.ndarray:
    """This process's contiguous share of a global batch's rows."""
    return rows.reshape(jax.process_count(), -1)[jax.process_index()]


def _loss_fn(task: Task) -> train.LossFn:
    def loss_fn(params, batch, rng, total):
        outputs = task.model.apply(
            {"params": params},
            *(batch[k] for k in INPUT_KEYS),
            deterministic=rng is None,
            rngs=None if rng is None else {"dropout": rng},
        )
        sums = task.loss(outputs, batch)
        loss_sum, count = sums["loss"]
        return loss_sum / jax.numpy.maximum(count if total is None else total, 1.0), sums

    return loss_fn


def predict(
    predict_step: Callable, params: Any, inputs: dict[str, np.ndarray], batch_size: int, mesh
) -> Any:
    """The model's outputs for every row of `inputs` (numpy), in `batch_size` global batches.

    The last batch is filled up with copies of row 0, whose outputs are dropped.
    """
    num_rows = len(inputs["input_ids"])
    padded = -(-num_rows // batch_size) * batch_size
    order = np.concatenate([np.arange(num_rows), np.zeros(padded - num_rows, np.int64)])
    outputs = []
    for start in range(0, padded, batch_size):
        rows = _host_share(order[start : start + batch_size])
        batch = sharding.global_batch(take_rows(inputs, rows), mesh)
        outputs.append(predict_step(params, batch))
    outputs = jax.device_get(outputs)
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:num_rows], *outputs)


def _evaluate(task: Task, predict_step, params, config, mesh) -> dict[str, dict[str, float]]:
    write = jax.process_index() == 0
    results = {}
    for eval_set in task.evals:
        outputs = predict(predict_step, params, eval_set.inputs, config.eval_batch_size, mesh)
        results[eval_set.name] = eval_set.finish(outputs, write)
        logging.info("%s %s: %s", task.name, eval_set.name, results[eval_set.name])
    return results


def _check_config(config: ml_collections.ConfigDict, mesh) -> int:
    per_host = sharding.per_host_batch(config.train, mesh)
    divisor = sharding.batch_divisor(mesh) * jax.process_count()
    if config.eval_batch_size % divisor:
        raise ValueError(
            f"config.eval_batch_size={config.eval_batch_size} must be a multiple of {divisor} "
            "(data x fsdp devices x hosts)"
        )
    return per_host


def run(
    task: Task, bert_config: BertConfig, params: Any, config, workdir: str, tokenizer_path: str
) -> dict[str, Any]:
    """Fine-tunes `task` from the encoder `params`, resuming from `workdir`'s checkpoint.

    Args:
      bert_config, params: the pretrained encoder (`load_pretrained`).
      config: the job's config (configs/glue.py etc.: train, mesh, eval_batch_size, seed).
      tokenizer_path: recorded in checkpoints, so the workdir can be loaded again later.

    Returns:
      {"step": last step, split: {metric: value}} (also written to workdir/eval_results.json).
    """
    workdir_path = pathlib.Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh(config.mesh)
    _check_config(config, mesh)
    t = config.train
    steps = make_schedule(t, len(task.train["input_ids"]), config.seed)
    warmup = round(t.warmup_proportion * steps.total_steps)
    schedule = optim.learning_rate_schedule(t.learning_rate, warmup, steps.total_steps)
    tx = optim.make_optimizer(t.optimizer, schedule, t.weight_decay, t.b1, t.b2, t.eps, t.clip_norm)
    seq_length = task.train["input_ids"].shape[1]
    abstract, shardings = train.state_shardings(task.model, tx, mesh, seq_length)
    ckpts = checkpoint.Checkpoints(workdir_path, t.max_to_keep, t.async_checkpoints)
    meta_model = dataclasses.asdict(bert_config)
    latest = ckpts.latest_step()
    if latest is not None:
        meta = ckpts.meta(latest)
        if meta.get("task") != task.name or meta.get("model") != meta_model:
            raise ValueError(
                f"{ckpts.directory}/{latest}: saved for task {meta.get('task')!r} with model "
                f"{meta.get('model')}; the config now says {task.name!r} with {meta_model}. "
                "Use a new workdir"
            )
        try:
            state, _ = ckpts.restore(latest, abstract, shardings)
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"{ckpts.directory}/{latest}: cannot restore this checkpoint into the {task.name} "
                f"model and optimizer (did train.optimizer change? use a new workdir): {e}"
            ) from e
        logging.info("resumed from step %d", latest)
    else:
        state = train.create_train_state(
            task.model, tx, mesh, config.seed, seq_length, {"bert": params}
        )
    keys = INPUT_KEYS + task.label_keys
    train_step = train.compile_train_step(
        _loss_fn(task),
        lambda batch: losses.label_count(batch[task.label_keys[0]]),
        tx,
        schedule,
        mesh,
        shardings,
        keys,
        t.accumulation_steps,
        config.seed,
    )
    predict_step = jax.jit(
        lambda p, batch: task.model.apply({"params": p}, *(batch[k] for k in INPUT_KEYS)),
        in_shardings=(shardings.params, {k: sharding.batch_sharding(mesh) for k in INPUT_KEYS}),
        out_shardings=sharding.replicated(mesh),
    )
    train_arrays = {k: task.train[k] for k in keys}
    writer = reporting.make_writer(workdir_path)
    start = int(jax.device_get(state.step))
    if start == 0:
        writer.write_hparams(reporting.flat_hparams(config))
    progress = reporting.Progress(steps.total_steps, start, t.batch_size, seq_length)

    def batch_at(step: int) -> dict[str, jax.Array]:
        local = take_rows(train_arrays, _host_share(steps.rows(step)))
        return sharding.global_batch(local, mesh)

    def run_eval(step: int, state: Any) -> None:
        _write_scalars(writer, step, _evaluate(task, predict_step, state.params, config, mesh))

    def save(step: int, state: Any) -> None:
        meta = {"step": step, "task": task.name, "model": meta_model, "tokenizer": tokenizer_path}
        ckpts.save(step, state, meta)

    state, step = loop.run(
        state,
        start,
        steps.total_steps,
        batch_at=batch_at,
        train_step=train_step,
        every=loop.Every(t.log_every, t.checkpoint_every, t.eval_every),
        ckpts=ckpts,
        save=save,
        writer=writer,
        progress=progress,
        evaluate=run_eval,
    )
    ckpts.wait()
    ckpts.close()
    if step < steps.total_steps:
        writer.flush()
        logging.info("stopped at step %d of %d; run again to resume", step, steps.total_steps)
        return {"step": step}
    results = _evaluate(task, predict_step, state.params, config, mesh)
    _write_scalars(writer, step, results)
    writer.flush()
    if jax.process_index() == 0:
        reporting.write_json_atomically(
            workdir_path / "eval_results.json", {"step": step, **results}
        )
    return {"step": step, **results}


def _write_scalars(writer, step: int, results: dict[str, dict[str, float]]) -> None:
    scalars = {
        f"eval/{split}/{k}": v for split, values in results.items() for k, v in values.items()
    }
    if scalars:
        writer.write_scalars(step, scalars)
