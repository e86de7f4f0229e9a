"""Length buckets: each batch padded only to the smallest bucket that holds its longest row,
each text of a model taking several (a bi-encoder's sides) to its own."""

from collections.abc import Sequence

import numpy as np


def used_lengths(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Per row, one past the last position that any of `masks` marks (0 for an empty row).

    Args:
      masks: input masks, each [rows, length] (several for a model taking several texts).

    Returns:
      int64 [rows].
    """
    used = np.zeros(len(masks[0]), np.int64)
    for mask in masks:
        marked = np.asarray(mask) != 0  # [rows, length]
        last = marked.shape[1] - np.argmax(marked[:, ::-1], axis=1)
        used = np.maximum(used, np.where(marked.any(axis=1), last, 0))
    return used


def bucket_length(longest: int, multiple: int, max_length: int) -> int:
    """The smallest length bucket that holds `longest` tokens, at most `max_length`
    (`max_length` itself when `multiple` is 0).

    The buckets are `multiple` times 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ...: every multiple up to
    four times it, then each power of two and the point halfway to the next. A batch is padded
    by at most half its longest row beyond the first four, and a sequence length L needs only
    about 2 * log2(L / multiple) compiled shapes (12 for 512 in multiples of 8, not 64).
    """
    if multiple <= 0:
        return max_length
    k = max(-(-longest // multiple), 1)  # multiples needed
    if k > 4:
        power = 1 << (k - 1).bit_length()  # the smallest power of two >= k
        k = power * 3 // 4 if k <= power * 3 // 4 else power
    return min(k * multiple, max_length)


def cut_texts(
    arrays: dict[str, np.ndarray], lengths: dict[str, int], full: int
) -> dict[str, np.ndarray]:
    """Each text's per-token arrays cut to that text's length.

    Args:
      lengths: input-mask key -> length. A mask key `PREFIXinput_mask` names a text; the arrays
        whose keys start with PREFIX are its own (the longest matching prefix wins). Per-token
        arrays of no text are cut to the longest length.
      full: the arrays' uncut length (second axis).
    """
    prefixes = sorted(((k[: -len("input_mask")], n) for k, n in lengths.items()), reverse=True)
    longest = max(lengths.values())
    out = {}
    for key, value in arrays.items():
        length = next((n for prefix, n in prefixes if key.startswith(prefix)), longest)
        out[key] = cut_length({key: value}, length, full)[key]
    return out


def cut_length(arrays: dict[str, np.ndarray], length: int, full: int) -> dict[str, np.ndarray]:
    """Every per-token array (rank 2 or more, second axis `full` long) cut to its first `length`
    positions; the others as they are."""
    return {
        k: v[:, :length] if v.ndim >= 2 and v.shape[1] == full else v for k, v in arrays.items()
    }


def mask_keys(keys: Sequence[str]) -> list[str]:
    """The input masks among `keys` (one per text a model takes)."""
    return [k for k in keys if k.endswith("input_mask")]


def lengths_of(arrays: dict[str, np.ndarray], multiple: int) -> np.ndarray:
    """Each row's used length (its full length when `multiple` is 0 or there is no mask)."""
    masks = [arrays[k] for k in mask_keys(list(arrays))]
    if multiple <= 0 or not masks:
        rows, full = next(iter(arrays.values())).shape[:2]
        return np.full(rows, full, np.int64)
    return used_lengths(masks)


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


def side_groups(lengths: np.ndarray, ratio: float) -> tuple[tuple[int, ...], ...]:
    """Which sides share packed rows, from each text's length ([rows, sides]): all together,
    unless one side's mean length is at least `ratio` times another's (a question beside its
    paragraph): then each side alone, so that short texts attend within short rows."""
    means = lengths.mean(axis=0)
    sides = lengths.shape[1]
    if sides > 1 and means.max() >= ratio * max(means.min(), 1.0):
        return tuple((s,) for s in range(sides))
    return (tuple(range(sides)),)
