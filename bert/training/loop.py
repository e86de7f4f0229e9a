"""The inner training loop of every job (bert/training/runner.py calls it): steps, metric
reports with the non-finite check, periodic evaluation and checkpoints, and a clean stop on
SIGTERM/SIGINT."""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from bert.training import budget, checkpoints, reporting
from bert.training.step import summarize
from util.errors import UserError


@dataclasses.dataclass(frozen=True)
class Every:
    """How often things happen, in steps (eval 0: never during training)."""

    log: int
    checkpoint: int
    eval: int = 0


def train_loop(
    state: Any,
    start: int,
    total: int,
    *,
    batch_at: Callable[[int], dict],
    train_step: Callable,
    every: Every,
    ckpts: checkpoints.Checkpoints,
    save: Callable[[int, Any], None],
    writer: Any,
    progress: reporting.Progress,
    evaluate: Callable[[int, Any], None] | None = None,
    extra_metrics: Callable[[dict[str, float]], dict[str, float]] | None = None,
    clock: budget.Clock | None = None,
) -> tuple[Any, int]:
    """Trains from step `start` to `total` (or until a signal, or until the clock's time budget
    is spent), and returns (state, step).

    Args:
      batch_at: step -> the global batch of that step.
      save: (step, state) -> starts a checkpoint; called every `every.checkpoint` steps, at the
        end, and on a signal.
      evaluate: (step, state) -> called every `every.eval` steps (not at the last step).
      extra_metrics: summary -> more scalars to report (e.g. MFU from the throughput).
      clock: the training time (bert/training/budget.py), read after each step; with a budget,
        `train_step` is called as (state, batch, progress), the budget's fraction spent, and
        the step at which it is spent is the last (checkpointed like the step `total`).

    Raises:
      UserError: a non-finite loss; the message names the last good checkpoint.
    """
    pending: list[dict[str, Any]] = []
    timed = clock is not None and clock.timed

    def report(step: int) -> None:
        summary = summarize(pending)
        pending.clear()
        _check_finite(summary, step, writer, ckpts)
        real, padded = summary.pop("real_tokens", None), summary.pop("padded_tokens", None)
        summary.update(progress.throughput(step, real, padded))
        if extra_metrics is not None:
            summary.update(extra_metrics(summary))
        if timed:
            summary.update({"training_seconds": clock.spent, "budget_fraction": clock.progress})
        writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})
        _log_line(step, start, total, progress, clock if timed else None)

    step = start
    with checkpoints.stop_on_signals() as stop:
        while step < total and not (timed and clock.over):
            inputs = (np.float32(clock.progress),) if timed else ()
            state, metrics = train_step(state, batch_at(step), *inputs)
            if clock is not None and step == start:
                clock.start()  # the first step is compiled and dispatched: training begins
            if pending:
                # At most two steps in flight: the host never runs far ahead of the devices.
                jax.block_until_ready(pending[-1]["loss"])
            pending.append(metrics)
            step += 1
            progress.update(step)
            if clock is not None:
                clock.sample()
            last = step == total or (timed and clock.over)
            if step == start + 1:
                _first_step_line(step, total, progress, every.log)
            if step % every.log == 0 or last or stop.is_set():
                report(step)
            if evaluate is not None and every.eval and step % every.eval == 0 and not last:
                _evaluate(evaluate, step, state, clock if timed else None)
            if step % every.checkpoint == 0 or last or stop.is_set():
                if pending:
                    report(step)
                save(step, state)
            if stop.is_set() or last:
                break
    progress.close()
    return state, step


def _first_step_line(step: int, total: int, progress, log_every: int) -> None:
    """The log line of a start's first step (off a terminal): its compilation's time."""
    if not progress.interactive:
        logging.info("step %d/%d: compiled and running after %s; reports every %d steps",
                     step, total, reporting.duration_text(progress.first_step_seconds()),
                     log_every)  # fmt: skip


def _log_line(step: int, start: int, total: int, progress, clock: budget.Clock | None) -> None:
    """A report's log line: the time budget's account, or the steps and ETA (off a terminal)."""
    if clock is not None:
        logging.info("%s", clock.status(step, start, total))
    elif not progress.interactive:
        logging.info("step %d/%d, ETA %s", step, total, progress.eta_text(step))


def _evaluate(evaluate: Callable, step: int, state: Any, clock: budget.Clock | None) -> None:
    """A periodic evaluation; under a time budget, its time is not training time."""
    if clock is None:
        evaluate(step, state)
        return
    jax.block_until_ready(state)  # the step before it is training time
    with clock.paused():
        evaluate(step, state)


def _check_finite(summary: dict[str, float], step: int, writer: Any, ckpts) -> None:
    """Raises a UserError naming the last good checkpoint when the loss or the gradient norm of
    a report is not finite."""
    bad = [f"{k} {summary[k]}" for k in ("loss", "grad_norm")
           if k in summary and not math.isfinite(summary[k])]  # fmt: skip
    if not bad:
        return
    writer.flush()
    ckpts.wait()
    newest = ckpts.latest_step()
    kept = (f"The last good checkpoint is step {newest} in {ckpts.directory}"
            if newest is not None else "No checkpoint was written before it")  # fmt: skip
    raise UserError(
        f"non-finite {', '.join(bad)} by step {step}; stopping (lower "
        f"train.learning_rate, or check the data and model.initializer_range). {kept}"
    )
