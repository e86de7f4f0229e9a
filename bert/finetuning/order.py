"""Which rows each step of a fine-tuning run takes: a seeded permutation per epoch, so step `s`
always sees the same rows and a resumed run is identical to an uninterrupted one; rows of similar
lengths can be batched together (`group_by_length`), or no text be repeated within a batch
(`texts`: sentence-transformers' no-duplicates batch sampler)."""

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

    With `texts` (each row's texts as ids, [rows, texts], equal ids for equal texts) a batch
    never holds a text twice: epoch e's batches are filled from its permutation in order, a row
    whose texts the batch already holds waiting for the next batch, as sentence-transformers'
    NoDuplicatesBatchSampler fills them; the epoch ends when the rows left cannot fill a batch
    (those are dropped), so epochs may have fewer steps than `num_rows // batch_size`.
    """

    num_rows: int
    batch_size: int
    total_steps: int
    seed: int
    lengths: np.ndarray | None = None
    group_batches: int = 0
    texts: np.ndarray | None = None
    # the last epoch's batches, kept so that each step does not recompute its epoch's order;
    # with texts, the first step of each epoch computed so far
    _last: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
    _starts: list = dataclasses.field(default_factory=lambda: [0], compare=False, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        """Steps of an epoch (with `texts`: of the first; later ones may differ)."""
        if self.texts is not None:
            return len(self.epoch_batches(0))
        return self.num_rows // self.batch_size

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """[steps, batch_size] row indices of epoch `epoch`'s batches, in order."""
        rng = np.random.default_rng((self.seed, epoch))
        if self.texts is not None:
            return distinct_batches(rng.permutation(self.num_rows), self.texts, self.batch_size)
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
        epoch, position = self._place(step)
        if epoch not in self._last:
            self._last.clear()
            self._last[epoch] = self.epoch_batches(epoch)
        return self._last[epoch][position]

    def _place(self, step: int) -> tuple[int, int]:
        """(epoch, position in it) of `step`."""
        if self.texts is None:
            return divmod(step, self.steps_per_epoch)
        epoch = 0
        while self._epoch_start(epoch + 1) <= step:
            epoch += 1
        return epoch, step - self._epoch_start(epoch)

    def _epoch_start(self, epoch: int) -> int:
        """The first step of `epoch` (with `texts`, from the lengths of the epochs before it,
        each computed once)."""
        while len(self._starts) <= epoch:
            steps = len(self.epoch_batches(len(self._starts) - 1))
            if steps == 0:
                raise UserError(f"no batch of {self.batch_size} rows without a repeated text: "
                                "lower config.train.batch_size")  # fmt: skip
            self._starts.append(self._starts[-1] + steps)
        return self._starts[epoch]

    def steps_of(self, epochs: float) -> int:
        """The steps of `epochs` epochs, the last one partly (its whole batches only)."""
        whole = math.floor(epochs)
        start = self._epoch_start(whole)
        return start + math.ceil((epochs - whole) * (self._epoch_start(whole + 1) - start))


def distinct_batches(order: np.ndarray, texts: np.ndarray, batch_size: int) -> np.ndarray:
    """[batches, batch_size] rows of `order` such that no batch holds a text id of `texts`
    ([rows, texts]) twice, as sentence-transformers' NoDuplicatesBatchSampler (drop_last) makes
    them: each batch takes the first rows left, in order, that bring no text it holds, the
    others waiting in order for the next one; rows that cannot fill a batch are dropped."""
    remaining = order.tolist()
    ids = [set(row) for row in texts.tolist()]
    batches = []
    while remaining:  # every pass takes at least the first row left
        held: set[int] = set()
        batch, waiting = [], []
        for position, row in enumerate(remaining):
            if not held.isdisjoint(ids[row]):
                waiting.append(row)
                continue
            batch.append(row)
            if len(batch) == batch_size:
                waiting += remaining[position + 1 :]
                batches.append(batch)
                break
            held |= ids[row]
        remaining = waiting
    return np.asarray(batches, np.int64).reshape(-1, batch_size)


def make_row_order(
    num_rows: int,
    batch_size: int,
    steps: int,
    epochs: float,
    group_by_length: int,
    seed: int,
    lengths: np.ndarray | None = None,
    texts: np.ndarray | None = None,
) -> RowOrder:
    """The order of a run of `steps` steps, or (`steps` 0) of `epochs` epochs of whole batches
    (the rest dropped); errors name config.train's fields.

    `lengths` (each row's used length) lets `group_by_length` batch rows of similar lengths
    together; `texts` (each row's text ids) keeps a text from appearing twice in a batch.
    """
    if num_rows < batch_size:
        raise UserError(
            f"{num_rows} training examples, fewer than config.train.batch_size={batch_size}"
        )
    if group_by_length < 0:
        raise UserError(f"config.train.group_by_length={group_by_length} must be 0 or more")
    if texts is not None and group_by_length > 1:
        raise UserError("config.train.no_duplicates takes random batches: set "
                        "config.train.group_by_length=0")  # fmt: skip
    plan = RowOrder(num_rows, batch_size, 0, seed, lengths, group_by_length, texts)
    if steps <= 0 and texts is not None:
        steps = plan.steps_of(epochs)
    elif steps <= 0:
        steps = math.ceil(epochs * (num_rows // batch_size))
    if steps <= 0:
        raise UserError(f"config.train.epochs={epochs} gives no steps; set train.steps")
    return dataclasses.replace(plan, total_steps=steps)
