"""The one home of a fine-tuning run's training batches: the rows each step takes (order.py),
cut to length buckets (buckets.py) or packed into rows (packing.py), this host's share of them,
and the global array the step takes.

`TrainBatches` cuts each step's batch to the length bucket of its longest row (each text of a
bi-encoder to its own); `PackedBatches` packs a per-token task's rows whole into rows of
`config.train.pack_length`, `PackedSides` a bi-encoder's texts of every side. All three know
every step's shape in advance, so the runner compiles them ahead. `train_batches` picks one for
a run, with the objective that reads its batches.
"""

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from bert.finetuning import buckets, packing
from bert.finetuning.objective import Finetuning
from bert.finetuning.order import RowOrder
from bert.finetuning.spec import Spec
from bert.tasks.features import ENCODER_INPUTS
from bert.training import sharding
from util.errors import UserError

Batch = dict[str, Any]
# a packed bi-encoder's rows per step follow from the run's first this many steps
# (first-fit of 32-48 texts takes well under a millisecond a step)
PACK_PLAN_STEPS = 500


def take_rows(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in arrays.items()}


def host_share(rows: np.ndarray) -> np.ndarray:
    """This process's contiguous share of a global batch's rows (along the first axis)."""
    return rows.reshape(jax.process_count(), -1, *rows.shape[1:])[jax.process_index()]


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
        return {m: buckets.bucket_length(int(n[rows].max()), self.multiple, self.full)
                for m, n in self.text_lengths.items()}  # fmt: skip

    def local(self, step: int) -> dict[str, np.ndarray]:
        """This host's share of step `step`'s batch, each text cut to its bucket."""
        local = take_rows(self.arrays, host_share(self.order.rows(step)))
        lengths = self.buckets_at(step)
        return buckets.cut_texts(local, lengths, self.full) if lengths else local

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
    longest = buckets.bucket_length(int(lengths.max()), multiple, full)
    length = min(max(row_length, longest), full)
    packed = packing.first_fit(lengths, length)
    while len(packed) > num_rows and length < full:
        length = buckets.bucket_length(length + 1, multiple, full)
        packed = packing.first_fit(lengths, length)
    num_rows = max(num_rows, -(-len(packed) // rows_multiple) * rows_multiple)
    return packed, num_rows, length


def pack_chunks(
    lengths: Sequence[np.ndarray],
    row_length: int,
    num_rows: int,
    rows_multiple: int,
    multiple: int,
    full: int,
) -> tuple[list[list[list[int]]], int, int]:
    """`pack_plan` for the mini-batches of a cached step, each packed into its own rows: (per
    mini-batch, its packed rows; the number of rows each takes; their length), the same for
    all (the longest and most that any mini-batch's plan needs). One mini-batch: pack_plan's."""
    length = max(pack_plan(n, row_length, num_rows, rows_multiple, multiple, full)[2]
                 for n in lengths)  # fmt: skip
    packed = [packing.first_fit(n, length) for n in lengths]
    most = max(-(-len(rows) // rows_multiple) * rows_multiple for rows in packed)
    return packed, max(num_rows, most), length


@dataclasses.dataclass(frozen=True)
class PackedBatches(_Steps):
    """The training batches of a run with config.train.pack: each step's rows (`order`) packed
    whole (packing.py) into `num_rows` rows of `row_length` tokens, or of a longer
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
    order: RowOrder,
    lengths: np.ndarray,
    row_length: int,
    rows_multiple: int,
    steps: int,
    chunks: int = 1,
) -> tuple[int, int]:
    """The packed rows of `row_length` tokens that the run's first `steps` steps need
    (first-fit; with `chunks` mini-batches, the rows of the fullest one): (enough for
    PACK_QUANTILE of them, enough for all), each rounded up to a multiple of `rows_multiple`.
    `lengths`: [rows, ...] each training row's sequences."""
    need = [max(len(packing.first_fit(lengths[rows].reshape(-1), row_length))
                for rows in chunk_rows(order.rows(step), chunks))
            for step in range(min(steps, order.total_steps))]  # fmt: skip
    usual, most = int(np.ceil(np.quantile(need, PACK_QUANTILE))), max(need)
    return tuple(-(-n // rows_multiple) * rows_multiple for n in (usual, most))


def chunk_rows(rows: np.ndarray, chunks: int) -> list[np.ndarray]:
    """A batch's rows in the cached loss's mini-batches: c, c + chunks, ... (gradcache.py)."""
    return [rows[c::chunks] for c in range(chunks)]


# a packed bi-encoder's usual rows hold this share of steps; a fuller step takes the most rows
# any of them needs (a second shape)
PACK_QUANTILE = 0.9

# a packed group's batch keys, after its prefix (`packed_keys`)
PACKED_INPUTS = (*ENCODER_INPUTS, "position_ids", "sequence_ids", "starts")


def packed_keys(groups: int) -> tuple[str, ...]:
    """The batch keys of `groups` packed groups, in the order a packed bi-encoder takes them."""
    return tuple(f"pack{g}_{name}" for g in range(groups) for name in PACKED_INPUTS)


@dataclasses.dataclass(frozen=True)
class PackedSides(_Steps):
    """The training batches of a bi-encoder run with config.train.pack: each step's rows
    (`order`) with the texts of each group of sides (buckets.side_groups) packed whole into that
    group's rows (`pack_plan`): one encoder pass per group, and a run compiles few shapes.
    Group g's batch keys are packed_keys' "pack{g}_..."; text s of the group's b-th row is its
    sequence b * len(group) + s, placed by "sequence_ids" and "starts" [batch, len(group)]
    (packing.sequence_places). The labels stay one per row.

    With the cached loss (`chunks` mini-batches, gradcache.py), each mini-batch's texts (rows
    c, c + chunks, ... of the step) are packed into rows of their own, as many for each, and
    the mini-batches' rows interleaved (packed row r of mini-batch c at r * chunks + c), so
    that the cache's split hands each mini-batch its rows, and "sequence_ids" and "starts"
    count within the mini-batch.

    Attributes:
      lengths: [rows, sides] each text's used length.
      arrays: the training arrays: each side's inputs, one key per side and encoder input
        (`side_keys`), and the per-row labels (`label_keys`), uncut.
      side_keys: per side, its keys of ENCODER_INPUTS (ids, segments, mask) in that order.
      groups: the sides packed together, consecutive and in order.
      row_lengths: each group's packed rows' length (pack_plan's row_length).
      num_rows: each group's (usual, most) rows (`rows_to_hold`) per mini-batch: a step takes
        the usual rows, or the most where the usual do not hold it.
      chunks: the cached loss's mini-batches (1: off).
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
    chunks: int = 1

    def _plans(self, step: int):
        """Per group: (per mini-batch, its texts' lengths [rows * len(group)] and packed rows;
        the number of rows per mini-batch; their length) (`pack_chunks`)."""
        parts = chunk_rows(self.order.rows(step), self.chunks)
        full = self.arrays[self.side_keys[0][0]].shape[1]
        plans = []
        for group, row_length, num_rows in zip(
            self.groups, self.row_lengths, self.num_rows, strict=True
        ):
            lengths = [self.lengths[rows][:, group].reshape(-1) for rows in parts]  # b * len + s
            usual, most = num_rows
            packed, n, length = pack_chunks(lengths, row_length, usual, self.rows_multiple,
                                            self.multiple, full)  # fmt: skip
            plans.append((lengths, packed, most if usual < n <= most else n, length))
        return parts, plans

    def local(self, step: int) -> dict[str, np.ndarray]:
        """This host's share of step `step`'s packed rows, starts and labels."""
        parts, plans = self._plans(step)
        batch = sum(len(rows) for rows in parts)
        out = {k: self.arrays[k][self.order.rows(step)] for k in self.label_keys}
        for g, (group, (lengths, packed, num_rows, length)) in enumerate(
            zip(self.groups, plans, strict=True)
        ):
            each, starts = [], np.zeros((batch, len(group)), np.int32)
            for c, rows in enumerate(parts):
                texts = {
                    name: np.stack([self.arrays[self.side_keys[s][i]][rows] for s in group], 1)
                    .reshape(len(lengths[c]), -1)  # [rows * len(group), full]
                    for i, name in enumerate(ENCODER_INPUTS)
                }  # fmt: skip
                packed_part = packing.pack(texts, lengths[c], packed[c], num_rows, {}, length)
                places, first = packing.sequence_places(lengths[c], packed[c], num_rows, length)
                each.append({**packed_part, "sequence_ids": places})
                starts[c :: self.chunks] = first.reshape(len(rows), len(group))
            # [num_rows, chunks, length] -> packed row r of mini-batch c at r * chunks + c
            for k in each[0]:
                rows_of = np.stack([part[k] for part in each], axis=1)
                out[f"pack{g}_{k}"] = rows_of.reshape(num_rows * self.chunks, length)
            out[f"pack{g}_starts"] = starts
        return {k: host_share(v) for k, v in out.items()}

    def shape_key(self, step: int) -> tuple:
        return tuple(plan[2:] for plan in self._plans(step)[1])  # (rows, length) per group


def _check_packing(spec: Spec, pack_length: int, group_by_length: int) -> None:
    if spec.pack_fill is None and spec.packed_model is None:
        raise UserError(
            f"config.train.pack: the {spec.task} job cannot pack its rows (only a per-token "
            "task, ner, and the bi-encoder, embeddings, can); set config.train.pack=False"
        )
    if group_by_length > 1:
        raise UserError(
            f"config.train.pack packs random batches; config.train.group_by_length="
            f"{group_by_length} would sort them by length: set it to 0"
        )
    if pack_length < 1:
        raise UserError(f"config.train.pack_length={pack_length} must be 1 or more (tokens)")


def _packed_sides(
    spec: Spec, settings, order: RowOrder, train_arrays, rows_multiple: int, chunks: int, mesh
):
    """(the objective, the batches) of a bi-encoder with config.train.pack: its sides packed in
    groups (buckets.side_groups), each into rows that hold its longest text (so that one long
    text does not change a step's shape), as many as most of the first PACK_PLAN_STEPS steps
    need, and a second shape for the fuller ones (rows_to_hold); with the cached loss's
    `chunks` mini-batches (0: off), each mini-batch packed into its own rows."""
    multiple = settings.pad_to_multiple_of
    full = train_arrays[spec.input_keys[0]].shape[1]
    sides = tuple(spec.input_keys[i : i + 3] for i in range(0, len(spec.input_keys), 3))
    each = np.stack([buckets.lengths_of({k[2]: train_arrays[k[2]]}, 1) for k in sides], axis=1)
    groups = buckets.side_groups(each, settings.text_bucket_ratio)
    row_lengths, num_rows = [], []
    for group in groups:
        longest = buckets.bucket_length(int(each[:, group].max()), multiple, full)
        row_lengths.append(min(max(settings.pack_length, longest), full))
        num_rows.append(rows_to_hold(order, each[:, group], row_lengths[-1], rows_multiple,
                                     PACK_PLAN_STEPS, max(chunks, 1)))  # fmt: skip
    keys = packed_keys(len(groups))
    objective = Finetuning(spec.packed_model, spec.loss, keys, spec.label_keys,
                           mini_batches=chunks)  # fmt: skip
    return objective, PackedSides(
        order, each, train_arrays, sides, spec.label_keys, groups, tuple(row_lengths),
        tuple(num_rows), rows_multiple, multiple, mesh, max(chunks, 1),
    )  # fmt: skip


def mini_batches(mini_batch_size: int, batch_size: int, rows_multiple: int) -> int:
    """How many mini-batches the cached loss cuts a batch into (0: off); errors name
    config.mini_batch_size. Each device must hold the same share of every mini-batch."""
    if not mini_batch_size:
        return 0
    if mini_batch_size < 0 or batch_size % mini_batch_size or mini_batch_size % rows_multiple:
        raise UserError(
            f"config.mini_batch_size={mini_batch_size} must divide config.train.batch_size="
            f"{batch_size} and be a multiple of {rows_multiple} (the devices along the batch)"
        )
    return batch_size // mini_batch_size


def train_batches(spec: Spec, settings, order: RowOrder, lengths: np.ndarray, mesh):
    """(the objective, the run's training batches): packed (settings.pack), else each step's
    rows cut to their length buckets.

    Args:
      settings: the run's finetune.Settings.
      lengths: each row's used length.
    """
    s, multiple = settings, settings.pad_to_multiple_of
    train_arrays = {k: spec.train[k] for k in spec.input_keys + spec.label_keys}
    full = train_arrays[spec.input_keys[0]].shape[1]
    rows_multiple = sharding.batch_divisor(mesh) * jax.process_count() * s.run.accumulation_steps
    chunks = mini_batches(spec.mini_batch_size, s.run.batch_size, rows_multiple)
    if s.pack:
        _check_packing(spec, s.pack_length, s.group_by_length)
        if spec.packed_model is not None:
            return _packed_sides(spec, s, order, train_arrays, rows_multiple, chunks, mesh)
        objective = Finetuning(
            spec.model, spec.loss, spec.input_keys, spec.label_keys, ("position_ids",)
        )
        row_length = min(s.pack_length, full)
        num_rows = packing.rows_for(lengths, s.run.batch_size, row_length, rows_multiple)
        return objective, PackedBatches(
            order, lengths, train_arrays, spec.pack_fill, rows_multiple, num_rows, row_length,
            multiple, mesh,
        )  # fmt: skip
    objective = Finetuning(spec.model, spec.loss, spec.input_keys, spec.label_keys,
                           mini_batches=chunks)  # fmt: skip
    inputs = {k: spec.train[k] for k in spec.input_keys}
    text_lengths = buckets.lengths_by_text(inputs, multiple, s.text_bucket_ratio)
    return objective, TrainBatches(order, text_lengths, train_arrays, full, multiple, mesh)
