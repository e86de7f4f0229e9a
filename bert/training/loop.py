"""The inner training loop of every job (bert/training/runner.py calls it): steps, metric
reports with the non-finite check, periodic evaluation and checkpoints, and a clean stop on
SIGTERM/SIGINT."""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
from absl import logging

from bert.training import checkpoints, reporting
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
) -> tuple[Any, int]:
    """Trains from step `start` to `total` (or until a signal), and returns (state, step).

    Args:
      batch_at: step -> the global batch of that step.
      save: (step, state) -> starts a checkpoint; called every `every.checkpoint` steps, at the
        end, and on a signal.
      evaluate: (step, state) -> called every `every.eval` steps (not at the last step).
      extra_metrics: summary -> more scalars to report (e.g. MFU from the throughput).

    Raises:
      UserError: a non-finite loss; the message names the last good checkpoint.
    """
    pending: list[dict[str, Any]] = []

    def report(step: int) -> None:
        summary = summarize(pending)
        pending.clear()
        bad = [f"{k} {summary[k]}" for k in ("loss", "grad_norm")
               if k in summary and not math.isfinite(summary[k])]  # fmt: skip
        if bad:
            writer.flush()
            ckpts.wait()
            newest = ckpts.latest_step()
            kept = (f"The last good checkpoint is step {newest} in {ckpts.directory}"
                    if newest is not None else "No checkpoint was written before it")  # fmt: skip
            raise UserError(
                f"non-finite {', '.join(bad)} by step {step}; stopping (lower "
                f"train.learning_rate, or check the data and model.initializer_range). {kept}"
            )
        real, padded = summary.pop("real_tokens", None), summary.pop("padded_tokens", None)
        summary.update(progress.throughput(step, real, padded))
        if extra_metrics is not None:
            summary.update(extra_metrics(summary))
        writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})
        if not progress.interactive:
            logging.info("step %d/%d, ETA %s", step, total, progress.eta_text(step))

    step = start
    with checkpoints.stop_on_signals() as stop:
        while step < total:
            state, metrics = train_step(state, batch_at(step))
            if pending:
                # At most two steps in flight: the host never runs far ahead of the devices.
                jax.block_until_ready(pending[-1]["loss"])
            pending.append(metrics)
            step += 1
            progress.update(step)
            last = step == total
            if step == start + 1 and not progress.interactive:
                logging.info("step %d/%d: compiled and running after %s; reports every %d steps",
                             step, total, reporting.duration_text(progress.first_step_seconds()),
                             every.log)  # fmt: skip
            if step % every.log == 0 or last or stop.is_set():
                report(step)
            if evaluate is not None and every.eval and step % every.eval == 0 and not last:
                evaluate(step, state)
            if step % every.checkpoint == 0 or last or stop.is_set():
                if pending:
                    report(step)
                save(step, state)
            if stop.is_set():
                break
    progress.close()
    return state, step
