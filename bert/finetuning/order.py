"""Which rows each step of a fine-tuning run takes: a seeded permutation per epoch, so step `s`
always sees the same rows and a resumed run is identical to an uninterrupted one; rows of similar
lengths can be batched together (`group_by_length`)."""

import dataclasses
import math

import numpy as np

from util.errors import UserError


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
    num_rows: int,
    batch_size: int,
    steps: int,
    epochs: float,
    group_by_length: int,
    seed: int,
    lengths: np.ndarray | None = None,
) -> RowOrder:
    """The order of a run of `steps` steps, or (`steps` 0) of `epochs` epochs of whole batches
    (the rest dropped); errors name config.train's fields.

    `lengths` (each row's used length) lets `group_by_length` batch rows of similar lengths
    together.
    """
    if num_rows < batch_size:
        raise UserError(
            f"{num_rows} training examples, fewer than config.train.batch_size={batch_size}"
        )
    if group_by_length < 0:
        raise UserError(f"config.train.group_by_length={group_by_length} must be 0 or more")
    if steps <= 0:
        steps = math.ceil(epochs * (num_rows // batch_size))
    if steps <= 0:
        raise UserError(f"config.train.epochs={epochs} gives no steps; set train.steps")
    return RowOrder(num_rows, batch_size, steps, seed, lengths, group_by_length)
