"""A wall-clock budget for training (`train.max_wall_clock`, as academic-budget-bert's
`--total_training_time`): the training time spent, summed over the starts of a run; the
budget's elapsed fraction, which the learning-rate schedule follows; and when the run ends.

What counts as training time: the training loop's wall-clock, from the moment this start's
first step has been dispatched (its program compiled) until the last step's end: the steps,
waiting for the input pipeline, and the checkpoint saves along the way. Not counted: start-up
(restoring, preparing the data, compiling: a resumed run repeats them, and counting them would
let an interrupted run train less than an uninterrupted one) and the held-out evaluations
during training (a measurement: how often a run is measured must not change what it trains).
Every checkpoint's metadata records the time spent (`META_KEY`), so a resumed run continues
the same budget, not a fresh one.

In a multi-process run every process takes process 0's clock at each reading, so that all agree
on the schedule's position and on the step the run ends at.
"""

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from jax.experimental import multihost_utils

from bert.training import reporting
from util.errors import UserError

META_KEY = "training_seconds"  # in each checkpoint's metadata: the training time spent by then


def check_seconds(value: Any, field: str = "config.train.max_wall_clock") -> float:
    """The budget in seconds (0: none), or a UserError naming `field` for anything that is not
    a finite number >= 0."""
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UserError(
            f"{field}={value!r} must be a number of seconds >= 0 (0: no time budget, "
            "train.steps alone ends the run)"
        )
    return seconds


class Clock:
    """Training time spent, read at each step (`sample`); paused around evaluations.

    Args:
      budget: seconds of training for the whole run; 0: no budget (the time is still recorded).
      spent: seconds spent by earlier starts (the restored checkpoint's `META_KEY`).
      agree: take process 0's reading on every process (a multi-process run with a budget).
    """

    def __init__(self, budget: float, spent: float = 0.0, agree: bool = False):
        self.budget = budget
        self.spent = spent  # at the latest reading
        self.spent_before = spent
        self._agree = agree
        self._started: float | None = None
        self._paused = 0.0

    @property
    def timed(self) -> bool:
        """Whether the budget ends the run and sets the schedule's position."""
        return self.budget > 0

    @property
    def over(self) -> bool:
        """The budget is spent (as of the latest reading)."""
        return self.timed and self.spent >= self.budget

    @property
    def progress(self) -> float:
        """The budget's fraction spent (as of the latest reading), in [0, 1]."""
        return min(self.spent / self.budget, 1.0) if self.timed else 0.0

    def start(self) -> None:
        """Starts counting this start's training time (after its first step's dispatch)."""
        self._started = time.perf_counter()

    def sample(self) -> float:
        """Reads the clock: the training time spent so far, all starts together."""
        if self._started is None:
            return self.spent
        local = self.spent_before + time.perf_counter() - self._started - self._paused
        if self._agree:
            local = float(multihost_utils.broadcast_one_to_all(np.float32(local)))
        self.spent = local
        return local

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside the block is not training time."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - began

    def expected_steps(self, step: int, start: int) -> int | None:
        """The step the run should reach at the budget, at this start's pace so far."""
        this_start = self.spent - self.spent_before
        if not self.timed or step <= start or this_start <= 0:
            return None
        rate = (step - start) / this_start  # steps per second
        return step + max(round((self.budget - self.spent) * rate), 0)

    def status(self, step: int, start: int, total: int) -> str:
        """A log line's account: the time spent of the budget and the steps expected."""
        expected = self.expected_steps(step, start)
        text = (f"step {step}: training time {reporting.duration_text(self.spent)} of the "
                f"budget {reporting.duration_text(self.budget)}")  # fmt: skip
        if expected is not None:
            text += f", about {min(expected, total)} steps at the budget"
        return text + (" (train.steps ends it first)" if expected and expected > total else "")
