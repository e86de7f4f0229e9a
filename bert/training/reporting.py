"""Metrics output: TensorBoard events and console lines (process 0 only), a progress bar with
ETA on a terminal, and the throughput figures (sequences/s, real tokens/s with the padding
fraction, MFU)."""

import math
import pathlib
import sys
import time
from collections.abc import Mapping
from typing import Any

import jax
from absl import logging

from bert.training import events


class MetricWriter:
    """Scalars as one log line per step (`[STEP] name=value, ...`) on every process, and as
    TensorBoard events in the workdir on process 0 (`events.py`)."""

    def __init__(self, event_file: events.EventFileWriter | None):
        self._events = event_file

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = [f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                  for k, v in sorted(scalars.items())]  # fmt: skip
        logging.info("[%d] %s", step, ", ".join(values))
        if self._events is not None:
            self._events.write_scalars(step, scalars)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        """The settings go to TensorBoard (and the workdir's config.json), not a log line of
        thousands of characters."""
        logging.info("hyperparameters: %d settings, in config.json and TensorBoard", len(hparams))
        if self._events is not None:
            self._events.write_hparams(hparams)

    def flush(self) -> None:
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        self.flush()


def make_writer(workdir: str | pathlib.Path) -> MetricWriter:
    """Log lines everywhere; the TensorBoard event file on process 0."""
    return MetricWriter(events.EventFileWriter(workdir) if jax.process_index() == 0 else None)


def flat_hparams(config: Any) -> dict[str, Any]:
    """The config flattened to `section.field` keys with scalar values, for write_hparams."""
    out = {}

    def walk(prefix: str, value: Any) -> None:
        if hasattr(value, "items"):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, bool | int | float | str) or value is None:
            out[prefix] = "" if value is None else value
        else:
            out[prefix] = str(value)

    walk("", config)
    return out


def eval_scalars(results: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """Nested results -> flat TensorBoard tags: {"dev": {"f1": x}} -> {"eval/dev/f1": x}."""
    out = {}
    for key, value in results.items():
        if isinstance(value, dict):
            out.update(eval_scalars(value, f"{prefix}/{key}"))
        else:
            out[f"{prefix}/{key}"] = value
    return out


def duration_text(seconds: float) -> str:
    """`HH:MM:SS`, with the days before it when there are any (`90d 01:34:52`)."""
    days, rest = divmod(round(seconds), 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {clock}" if days else clock


class Progress:
    """Throughput between reports, and a one-line progress bar with ETA on a terminal."""

    def __init__(self, total_steps: int, start_step: int, sequences_per_step: int, seq_len: int):
        self.total_steps = total_steps
        self.sequences_per_step = sequences_per_step
        self.seq_len = seq_len
        self.interactive = sys.stdout.isatty() and jax.process_index() == 0
        self._last_step = start_step
        self._last_time = time.perf_counter()
        self._start_step = start_step
        self._start_time = self._last_time
        self._first_time = math.nan  # when this process's first step came back (compiled)
        self._drawn = False  # the bar is on the terminal's last line
        if self.interactive:  # a log line first clears the bar, which the next step redraws
            logging.get_absl_handler().addFilter(self._clear_for_a_log_line)

    def throughput(
        self, step: int, real_tokens: float | None = None, padded_tokens: float | None = None
    ) -> dict[str, float]:
        """sequences/s, tokens/s and step time since the previous call.

        Args:
          real_tokens, padded_tokens: the non-padding tokens and all token positions of the
            steps since the previous call; tokens/s then counts real tokens only, with
            padding_fraction beside it. Without them every position counts (seq_len each).
        """
        now = time.perf_counter()
        steps = max(step - self._last_step, 1)
        elapsed = max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        sequences = steps * self.sequences_per_step / elapsed
        out = {"sequences_per_second": sequences, "step_time": elapsed / steps}
        if real_tokens is None or not padded_tokens:
            out["tokens_per_second"] = sequences * self.seq_len
            return out
        out["tokens_per_second"] = real_tokens / elapsed
        out["padding_fraction"] = 1.0 - real_tokens / padded_tokens
        return out

    def eta_seconds(self, step: int) -> float:
        """The time left at the pace since the first step (compiling it is not a step's pace)."""
        done = step - self._start_step - 1
        if done <= 0 or math.isnan(self._first_time):
            return math.nan
        rate = (time.perf_counter() - self._first_time) / done
        return rate * (self.total_steps - step)

    def first_step_seconds(self) -> float:
        """Seconds from the start until the first step came back: compiling it, mostly."""
        return self._first_time - self._start_time

    def eta_text(self, step: int) -> str:
        eta = self.eta_seconds(step)
        return "?" if math.isnan(eta) else duration_text(eta)

    def update(self, step: int, loss: float | None = None) -> None:
        """Notes the step; redraws the progress bar (terminal only)."""
        if step == self._start_step + 1:
            self._first_time = time.perf_counter()
        if not self.interactive:
            return
        width = 30
        filled = int(width * step / max(self.total_steps, 1))
        eta_text = self.eta_text(step)
        loss_text = "" if loss is None else f" loss {loss:.4f}"
        bar = "#" * filled + "." * (width - filled)
        sys.stdout.write(f"\rstep {step}/{self.total_steps} [{bar}] ETA {eta_text}{loss_text}")
        sys.stdout.flush()
        self._drawn = True

    def _clear_for_a_log_line(self, record: Any) -> bool:
        """Log filter: clears the bar's line before a log line is written (never drops one)."""
        if self._drawn:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()
            self._drawn = False
        return True

    def close(self) -> None:
        if self.interactive:
            logging.get_absl_handler().removeFilter(self._clear_for_a_log_line)
            sys.stdout.write("\n" if self._drawn else "")
            sys.stdout.flush()
