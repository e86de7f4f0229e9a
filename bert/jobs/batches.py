"""The training batches of a fine-tuning run: which rows each step takes, cut to length
buckets or packed into rows.

The order is a seeded permutation per epoch (`RowOrder`), so step `s` always sees the same
rows and a resumed run is identical to an uninterrupted one; rows of similar lengths can be
batched together (`config.train.group_by_length`). `TrainBatches` cuts each step's batch to the
length bucket of its longest row (each text of a bi-encoder to its own); `PackedBatches` packs a
per-token task's rows whole into rows of `config.train.pack_length` (bert/tasks/packing.py),
`PackedSides` a bi-encoder's texts of every side.
All three know every step's shape in advance, so the runner compiles them ahead.
"""

import abc
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from bert.tasks import features, packing
from bert.training import sharding
from input_pipeline.errors import UserError

Batch = dict[str, Any]


def take_rows(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in arrays.items()}


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


def host_share(rows: np.ndarray) -> np.ndarray:
    """This process's contiguous share of a global batch's rows (along the first axis)."""
    return rows.reshape(jax.process_count(), -1, *rows.shape[1:])[jax.process_index()]


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
    if len(each) > 1 and len(side_groups(np.stack(list(each.values()), axis=1), ratio)) == 1:
        shared = np.max(np.stack(list(each.values())), axis=0)  # [rows]
        each = dict.fromkeys(each, shared)
    return each


class _Steps(abc.ABC):
    """What the runner asks of a run's training batches (runner.Run.batches and batch_shapes),
    from a subclass's `local(step)` (this host's share of the step's batch) and `shape_key(step)`
    (what fixes the step's shape)."""

    order: RowOrder
    mesh: Any

    @abc.abstractmethod
    def local(self, step: int) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def shape_key(self, step: int) -> Any: ...

    def batches(self, start: int) -> Callable[[int], Batch]:
        """step -> its global batch (runner.Run.batches)."""
        return lambda step: sharding.global_batch(self.local(step), self.mesh)

    def shapes(self, start: int) -> list[Batch]:
        """The abstract global batches from `start` on, one per shape, in the order first needed
        (runner.Run.batch_shapes)."""
        first = {}  # each shape's key -> the first step that needs it
        for at in range(start, self.order.total_steps):
            first.setdefault(self.shape_key(at), at)
        return [sharding.abstract_global_batch(self.local(at), self.mesh) for at in first.values()]


@dataclasses.dataclass(frozen=True)
class TrainBatches(_Steps):
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
        local = take_rows(self.arrays, host_share(self.order.rows(step)))
        buckets = self.buckets_at(step)
        return features.cut_texts(local, buckets, self.full) if buckets else local

    def shape_key(self, step: int) -> tuple:
        return tuple(sorted(self.buckets_at(step).items()))  # each text's bucket


def pack_plan(
    lengths: np.ndarray,
    row_length: int,
    num_rows: int,
    rows_multiple: int,
    multiple: int,
    full: int,
) -> tuple[list[list[int]], int, int]:
    """(each packed row's sequences, as indices into `lengths`; the number of rows; their
    length) for one step's sequences: `num_rows` rows of the shortest length bucket (of
    `multiple`, from `row_length` on) that holds them, more rows (a multiple of
    `rows_multiple`) only where even `full` tokens do not."""
    longest = features.bucket_length(int(lengths.max()), multiple, full)
    length = min(max(row_length, longest), full)
    packed = packing.first_fit(lengths, length)
    while len(packed) > num_rows and length < full:
        length = features.bucket_length(length + 1, multiple, full)
        packed = packing.first_fit(lengths, length)
    num_rows = max(num_rows, -(-len(packed) // rows_multiple) * rows_multiple)
    return packed, num_rows, length


@dataclasses.dataclass(frozen=True)
class PackedBatches(_Steps):
    """The training batches of a run with config.train.pack: each step's rows (`order`) packed
    whole (bert/tasks/packing.py) into `num_rows` rows of `row_length` tokens, or of a longer
    length bucket where they do not fit, so that a run compiles few shapes (2 on CoNLL-2003).
    The packing follows from the step's rows alone, so a step's batch is as fixed as its rows;
    each host packs the global batch and takes its share of the rows.

    Attributes:
      lengths: each training row's used length.
      arrays: the training arrays (inputs and labels), one row per feature, uncut.
      fill: packing.pack's fill values (Spec.pack_fill).
      rows_multiple: devices along the batch x hosts x accumulation steps; `num_rows` is a
        multiple of it.
      multiple: config.pad_to_multiple_of (the length buckets).
    """

    order: RowOrder
    lengths: np.ndarray
    arrays: dict[str, np.ndarray]
    fill: dict[str, int]
    rows_multiple: int
    num_rows: int
    row_length: int
    multiple: int
    mesh: Any

    def _packed(self, step: int) -> tuple[list[list[int]], int, int]:
        """(each packed row's training rows, the number of rows, their length) of step `step`
        (`pack_plan`)."""
        rows = self.order.rows(step)
        full = next(iter(self.arrays.values())).shape[1]
        packed, num_rows, length = pack_plan(self.lengths[rows], self.row_length, self.num_rows,
                                             self.rows_multiple, self.multiple, full)  # fmt: skip
        return [[int(rows[i]) for i in r] for r in packed], num_rows, length

    def local(self, step: int) -> dict[str, np.ndarray]:
        """This host's share of step `step`'s packed rows."""
        packed, num_rows, length = self._packed(step)
        arrays = packing.pack(self.arrays, self.lengths, packed, num_rows, self.fill, length)
        return {k: host_share(v) for k, v in arrays.items()}

    def shape_key(self, step: int) -> tuple[int, int]:
        return self._packed(step)[1:]  # (rows, length)


def rows_to_hold(
    order: RowOrder, lengths: np.ndarray, row_length: int, rows_multiple: int, steps: int
) -> tuple[int, int]:
    """The packed rows of `row_length` tokens that the run's first `steps` steps need
    (first-fit): (enough for PACK_QUANTILE of them, enough for all), each rounded up to a
    multiple of `rows_multiple`. `lengths`: [rows, ...] each training row's sequences."""
    need = [len(packing.first_fit(lengths[order.rows(step)].reshape(-1), row_length))
            for step in range(min(steps, order.total_steps))]  # fmt: skip
    usual, most = int(np.ceil(np.quantile(need, PACK_QUANTILE))), max(need)
    return tuple(-(-n // rows_multiple) * rows_multiple for n in (usual, most))


# a packed bi-encoder's usual rows hold this share of steps; a fuller step takes the most rows
# any of them needs (a second shape). On STS benchmark batches of 16 pairs in rows of 64 the
# steps need 6-11 rows, 7.9 on average (BENCHMARKS.md).
PACK_QUANTILE = 0.9

# a packed group's batch keys, after its prefix (`packed_keys`)
PACKED_INPUTS = (*features.ENCODER_INPUTS, "position_ids", "sequence_ids", "starts")


def packed_keys(groups: int) -> tuple[str, ...]:
    """The batch keys of `groups` packed groups, in the order a packed bi-encoder takes them."""
    return tuple(f"pack{g}_{name}" for g in range(groups) for name in PACKED_INPUTS)


def side_groups(lengths: np.ndarray, ratio: float) -> tuple[tuple[int, ...], ...]:
    """Which sides share packed rows, from each text's length ([rows, sides]): all together,
    unless one side's mean length is at least `ratio` times another's (a question beside its
    paragraph): then each side alone, so that short texts attend within short rows."""
    means = lengths.mean(axis=0)
    sides = lengths.shape[1]
    if sides > 1 and means.max() >= ratio * max(means.min(), 1.0):
        return tuple((s,) for s in range(sides))
    return (tuple(range(sides)),)


@dataclasses.dataclass(frozen=True)
class PackedSides(_Steps):
    """The training batches of a bi-encoder run with config.train.pack: each step's rows
    (`order`) with the texts of each group of sides (`side_groups`) packed whole into that
    group's rows (`pack_plan`): one encoder pass per group, and a run compiles few shapes.
    Group g's batch keys are packed_keys' "pack{g}_..."; text s of the group's b-th row is its
    sequence b * len(group) + s, placed by "sequence_ids" and "starts" [batch, len(group)]
    (packing.sequence_places). The labels stay one per row.

    Attributes:
      lengths: [rows, sides] each text's used length.
      arrays: the training arrays: each side's inputs, one key per side and encoder input
        (`side_keys`), and the per-row labels (`label_keys`), uncut.
      side_keys: per side, its keys of ENCODER_INPUTS (ids, segments, mask) in that order.
      groups: the sides packed together, consecutive and in order.
      row_lengths: each group's packed rows' length (pack_plan's row_length).
      num_rows: each group's (usual, most) rows (`rows_to_hold`): a step takes the usual rows,
        or the most where the usual do not hold it.
      Others: as PackedBatches'.
    """

    order: RowOrder
    lengths: np.ndarray
    arrays: dict[str, np.ndarray]
    side_keys: tuple[tuple[str, ...], ...]
    label_keys: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]
    row_lengths: tuple[int, ...]
    num_rows: tuple[tuple[int, int], ...]
    rows_multiple: int
    multiple: int
    mesh: Any

    def _plans(self, step: int):
        """Per group: (its texts' lengths [batch * len(group)], pack_plan's rows, the number of
        rows, their length)."""
        rows = self.order.rows(step)
        full = self.arrays[self.side_keys[0][0]].shape[1]
        plans = []
        for group, row_length, num_rows in zip(
            self.groups, self.row_lengths, self.num_rows, strict=True
        ):
            lengths = self.lengths[rows][:, group].reshape(-1)  # row-major: b * len(group) + s
            usual, most = num_rows
            packed, n, length = pack_plan(lengths, row_length, usual, self.rows_multiple,
                                          self.multiple, full)  # fmt: skip
            plans.append((lengths, packed, most if usual < n <= most else n, length))
        return rows, plans

    def local(self, step: int) -> dict[str, np.ndarray]:
        """This host's share of step `step`'s packed rows, starts and labels."""
        rows, plans = self._plans(step)
        out = {k: self.arrays[k][rows] for k in self.label_keys}
        for g, (group, (lengths, packed, num_rows, length)) in enumerate(
            zip(self.groups, plans, strict=True)
        ):
            texts = {
                name: np.stack([self.arrays[self.side_keys[s][i]][rows] for s in group], axis=1)
                .reshape(len(lengths), -1)  # [batch * len(group), full]
                for i, name in enumerate(features.ENCODER_INPUTS)
            }  # fmt: skip
            packed_group = packing.pack(texts, lengths, packed, num_rows, {}, length)
            places, starts = packing.sequence_places(lengths, packed, num_rows, length)
            packed_group.update(sequence_ids=places, starts=starts.reshape(len(rows), len(group)))
            out.update({f"pack{g}_{k}": v for k, v in packed_group.items()})
        return {k: host_share(v) for k, v in out.items()}

    def shape_key(self, step: int) -> tuple:
        return tuple(plan[2:] for plan in self._plans(step)[1])  # (rows, length) per group
