"""The run skeleton every training job uses (pre-training and each fine-tuning task).

`train_and_evaluate` restores the newest checkpoint of the workdir or initialises the state,
sets up TensorBoard and progress, runs the loop (periodic reports, evaluations and
checkpoints), then evaluates and writes `eval_results.json`. Every checkpoint records the same
metadata: the step, the task, the model config, the tokenizer and a classifier's label names,
so that any workdir can be resumed (only for the same task and model), loaded as a pretrained
model (bert/pretrained.py) or exported (bert/export/workdirs.py).
SIGTERM or Ctrl-C saves a checkpoint and stops without the final evaluation (a preempted VM has
seconds, not minutes); running the same command again resumes and finishes the run.
With a time budget (`Run.max_wall_clock`, bert/training/budget.py) the run ends, checkpointed
and evaluated, at the step where its training time, summed over its starts, reaches the budget.
"""

import dataclasses
import os
import pathlib
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import logging

from bert.model import BertConfig
from bert.training import ahead, budget, checkpoints, fingerprint, loop, reporting, sharding, step
from util import atomic, hub, paths
from util.errors import Stopped, UserError

Batch = dict[str, jax.Array]
Results = dict[str, Any]  # metric name -> value, or split -> {metric name -> value}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the skeleton runs a job (the job's `seed` and `train` config fields).

    Attributes:
      seed: the parameters' initialisation and the steps' random keys.
      batch_size: the global batch (throughput reports).
      accumulation_steps: micro-batches per step.
      log_every, eval_every, checkpoint_every: steps between reports, evaluations (0: only at
        the end) and checkpoints.
      max_to_keep: checkpoints kept.
      async_checkpoints: save in the background while training goes on.
      compile_ahead_threads: threads compiling the steps' shapes in the background (0: each
        when first needed).
      hparams: the job's settings, flat (`section.field` -> scalar), shown in TensorBoard and
        written to workdir/config.json at each start.
    """

    seed: int
    batch_size: int
    accumulation_steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    max_to_keep: int
    async_checkpoints: bool
    compile_ahead_threads: int
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Run:
    """What a training job hands the skeleton.

    Attributes:
      task: recorded in checkpoints; a workdir is never resumed for another task.
      model: the module trained (a head over the encoder).
      model_config: the encoder's config, recorded; a resume with another one is refused.
      tokenizer: the tokenizer file the inputs were made with, recorded (relative to the
        workdir when it lies inside it, so a moved workdir still finds it).
      objective: the loss (step.Objective).
      tx, schedule: the optimizer and its learning-rate schedule.
      total_steps: optimizer steps of the whole run (with a time budget: at most).
      seq_length: the sequence length (initialisation shapes and throughput).
      initial_params: () -> parameters to start from (None: random); called on a fresh start only.
      batches: start step -> (step -> the global batch of that step).
      make_evaluate: (the abstract parameters with their shardings, a CompileAhead) ->
        (params -> results); called every train.eval_every steps and at the end.
      extra_metrics: a report's summary -> more scalars (e.g. MFU).
      labels: the names of a classifier's or tagger's classes (class i is labels[i]),
        recorded so that the workdir exports with them (bert/export/workdirs.py).
      recorded: more settings recorded in the checkpoints' metadata for whoever loads them
        (a sentence embedding's pooling, normalisation and length: bert/pretrained.py).
      batch_shapes: start step -> the abstract global batches (ShapeDtypeStructs with their
        shardings) of the steps from there on, in the order their shapes are first needed; their
        train steps are compiled ahead (bert/training/ahead.py). None: compiled on first use.
      max_wall_clock: a budget of training time in seconds (bert/training/budget.py says what
        counts); 0: none. With one, `tx`'s own learning rate must be 1 (optim.UNIT_RATE): each
        step scales its update by schedule(budget fraction spent x total_steps), so that the
        schedule ends at the budget.
      probe: (step, params, last) -> more results, evaluated beside `make_evaluate`'s: at step
        0 of a fresh run, with every evaluation during training and at the end (a pre-training
        run's downstream probes, bert/jobs/downstream.py; it returns {} at steps it skips).
    """

    task: str
    model: nn.Module
    model_config: BertConfig
    tokenizer: str
    objective: step.Objective
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    total_steps: int
    seq_length: int
    initial_params: Callable[[], Any | None]
    batches: Callable[[int], Callable[[int], Batch]]
    make_evaluate: Callable[[Any], Callable[[Any], Results]]
    extra_metrics: Callable[[dict[str, float]], dict[str, float]] | None = None
    labels: tuple[str, ...] = ()
    recorded: dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_shapes: Callable[[int], list[Batch]] | None = None
    max_wall_clock: float = 0.0
    probe: Callable[[int, Any, bool], Results] | None = None


def recorded_tokenizer(tokenizer: str, workdir: pathlib.Path) -> str:
    """The tokenizer as checkpoints record it: relative when inside the workdir; a Hub model's
    id and commit (`org/name@sha`) when it came from the Hugging Face cache."""
    model_id = hub.model_id_of(tokenizer)
    if model_id is not None:
        return model_id
    path = paths.absolute(tokenizer)
    try:
        return str(path.relative_to(paths.absolute(workdir)))
    except ValueError:
        return str(path)


def _restore_or_init(
    run: Run, ckpts, abstract, shardings, mesh, seed: int
) -> tuple[step.TrainState, dict]:
    """(the newest checkpoint that restores (damaged newer ones moved aside), or a fresh state;
    its metadata, or {})."""
    model = dataclasses.asdict(run.model_config)
    for free in ("remat", "attention_impl"):  # how the steps compute, free to change between runs
        model.pop(free)
    # a field newer than a checkpoint was at its default when the checkpoint was saved
    defaults = {f.name: f.default for f in dataclasses.fields(BertConfig)
                if f.default is not dataclasses.MISSING}  # fmt: skip

    def check(at: int, meta: dict) -> None:
        task = meta.get("task", "pretrain")  # pre-training checkpoints once recorded no task
        saved = {**defaults, **(meta.get("model") or {})}
        differ = [f"model.{k}: saved {saved.get(k)!r}, now {v!r}"
                  for k, v in model.items() if saved.get(k) != v]  # fmt: skip
        if task != run.task:
            differ.insert(0, f"task: saved {task!r}, now {run.task!r}")
        if differ:
            raise UserError(
                f"{ckpts.directory}/{at} was saved with another config ({'; '.join(differ)}): "
                "use a new workdir (with init_from to start from this one)"
            )

    try:
        found = ckpts.restore_newest(abstract, shardings, check)
    except checkpoints.StateMismatch as e:
        raise UserError(
            f"{ckpts.directory}: cannot restore the newest checkpoint into the configured "
            f"model and optimizer (did train.optimizer change? use a new workdir, with "
            f"init_from to keep the parameters): {e}"
        ) from e
    if found is None:
        fresh = step.create_train_state(
            run.model, run.tx, mesh, seed, run.seq_length, run.initial_params(), shardings
        )
        return fresh, {}
    latest, state, meta = found
    logging.info("resumed from step %d", latest)
    return state, meta


def train_and_evaluate(run: Run, settings: Settings, workdir: str | os.PathLike, mesh) -> Results:
    """Trains `run` in `workdir` (resuming from its newest checkpoint), then evaluates.

    Args:
      mesh: the device mesh (bert/training/sharding.py).

    Returns:
      {"step": last step, **results} (also written to workdir/eval_results.json).

    Raises:
      Stopped: a signal stopped the run before its last step (its checkpoint is saved).
    """
    c = run.model_config
    if c.attention_impl == "cudnn" and c.attention_dropout > 0:  # checked before any compiling
        raise UserError(
            "config.model.attention_impl='cudnn' cannot train with attention dropout: set "
            "config.model.attention_dropout=0 (or config.model.attention_impl='xla')"
        )
    t = settings
    if t.compile_ahead_threads < 0:
        raise UserError(
            f"config.train.compile_ahead_threads={t.compile_ahead_threads} must be 0 "
            "(compile each shape when first needed) or more"
        )
    workdir = paths.path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    abstract, shardings = step.state_shardings(run.model, run.tx, mesh, run.seq_length)
    ckpts = checkpoints.Checkpoints(workdir, t.max_to_keep, t.async_checkpoints)
    state, restored = _restore_or_init(run, ckpts, abstract, shardings, mesh, t.seed)
    start = int(jax.device_get(state.step))
    clock = _clock(run, restored, start)
    timed_steps = run.total_steps if clock.timed else 0
    train_step = step.compile_train_step(
        run.objective, run.tx, run.schedule, mesh, shardings, t.accumulation_steps, t.seed,
        timed_steps,
    )  # fmt: skip
    fixed = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    progress = jax.ShapeDtypeStruct((), jnp.float32, sharding=sharding.replicated(mesh))
    compiler = ahead.CompileAhead(t.compile_ahead_threads)
    try:
        shapes = run.batch_shapes(start) if run.batch_shapes is not None else ()
        train_step = compiler.wrap(train_step, fixed, shapes, (progress,) if timed_steps else ())
        evaluate = run.make_evaluate(fixed.params, compiler)
        checksums = compiler.single(fingerprint.checksum_program(fixed), fixed)
        programs = _Programs(train_step, evaluate, checksums)
        return _train(run, settings, workdir, state, start, programs, ckpts, clock)
    finally:
        compiler.close()


def _clock(run: Run, restored: dict, start: int) -> budget.Clock:
    """The run's training-time clock, continuing the time the restored checkpoint spent."""
    spent = float(restored.get(budget.META_KEY, 0.0))
    clock = budget.Clock(run.max_wall_clock, spent, agree=jax.process_count() > 1)
    if clock.timed:
        left = max(clock.budget - spent, 0.0)
        logging.info(
            "time budget %s of training (train.max_wall_clock; start-up and held-out "
            "evaluations not counted): %s spent before step %d, %s left; the learning rate "
            "follows the budget's elapsed fraction; train.steps (%d) is an upper bound",
            reporting.duration_text(clock.budget), reporting.duration_text(spent), start,
            reporting.duration_text(left), run.total_steps,
        )  # fmt: skip
    return clock


@dataclasses.dataclass(frozen=True)
class _Programs:
    """The run's compiled (or compiling) programs: the train step, the evaluation and the
    checkpoint checksums."""

    train_step: Callable
    evaluate: Callable
    checksums: Callable


def _train(
    run: Run, t: Settings, workdir, state, start: int, programs: _Programs, ckpts, clock
) -> Results:
    """The loop, the last checkpoint, then the final evaluation (train_and_evaluate's body)."""
    writer = reporting.make_writer(workdir)
    if start == 0:
        writer.write_hparams(t.hparams)
    if jax.process_index() == 0:  # the settings of the newest start
        atomic.write_json(workdir / "config.json", t.hparams)
    meta = {"task": run.task, "model": dataclasses.asdict(run.model_config),
            "tokenizer": recorded_tokenizer(run.tokenizer, workdir)}  # fmt: skip
    if run.labels:
        meta["labels"] = list(run.labels)
    meta.update(run.recorded)

    def save(at: int, current: step.TrainState) -> None:
        recorded = {"step": at, **meta, budget.META_KEY: clock.spent}
        ckpts.save(at, current, recorded, programs.checksums)

    def results_at(at: int, params: Any, last: bool = False) -> Results:
        results = programs.evaluate(params)
        return {**results, **(run.probe(at, params, last) if run.probe else {})}

    def run_eval(at: int, current: step.TrainState) -> None:
        writer.write_scalars(at, reporting.eval_scalars(results_at(at, current.params)))

    if start == 0 and run.probe is not None:  # the scores of the initial parameters
        writer.write_scalars(0, reporting.eval_scalars(run.probe(0, state.params, False)))

    state, last = loop.train_loop(
        state,
        start,
        run.total_steps,
        batch_at=run.batches(start),
        train_step=programs.train_step,
        every=loop.Every(t.log_every, t.checkpoint_every, t.eval_every),
        ckpts=ckpts,
        save=save,
        writer=writer,
        progress=reporting.Progress(run.total_steps, start, t.batch_size, run.seq_length),
        evaluate=run_eval,
        extra_metrics=run.extra_metrics,
        clock=clock,
    )
    ckpts.wait()
    ckpts.close()
    if last < run.total_steps and not clock.over:
        writer.flush()
        raise Stopped(last, run.total_steps)
    if clock.over:
        logging.info("%s: time budget reached at step %d (train.max_wall_clock %s)", run.task,
                     last, reporting.duration_text(clock.budget))  # fmt: skip
    results = results_at(last, state.params, last=True)
    writer.write_scalars(last, reporting.eval_scalars(results))
    writer.flush()
    if jax.process_index() == 0:
        atomic.write_json(workdir / "eval_results.json", {"step": last, **results})
    logging.info("%s: finished at step %d; evaluation %s", run.task, last, results)
    return {"step": last, **results}
