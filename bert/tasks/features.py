"""Feature helpers shared by every task family: the encoder's input names, sentence and
sentence-pair encoding with BERT's truncation, and padding rows into arrays."""

from collections.abc import Sequence

import numpy as np

from input_pipeline import tokenizers
from input_pipeline.errors import UserError

# The encoder's inputs, in the order the models take them.
ENCODER_INPUTS = ("input_ids", "segment_ids", "input_mask")


def truncate_pair(first: list[int], second: list[int], max_tokens: int) -> None:
    """Shortens the longer of the two lists, one token at a time, until both fit ``max_tokens``.

    Edits the lists in place; on a tie the second loses a token.
    """
    while len(first) + len(second) > max_tokens:
        if len(first) > len(second):
            first.pop()
        else:
            second.pop()


def pack(
    rows: Sequence[tuple[list[int], list[int]]], max_seq_length: int, pad_id: int
) -> dict[str, np.ndarray]:
    """Pads (ids, segment ids) rows to ``max_seq_length``.

    Returns:
      ENCODER_INPUTS: "input_ids", "segment_ids", "input_mask", int32 [num_rows, max_seq_length].
    """
    shape = (len(rows), max_seq_length)
    input_ids = np.full(shape, pad_id, np.int32)  # [rows, length]
    segment_ids = np.zeros(shape, np.int32)  # [rows, length]
    input_mask = np.zeros(shape, np.int32)  # [rows, length]
    for i, (ids, segments) in enumerate(rows):
        input_ids[i, : len(ids)] = ids
        segment_ids[i, : len(ids)] = segments
        input_mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "segment_ids": segment_ids, "input_mask": input_mask}


def encode_texts(
    tokenizer: tokenizers.Tokenizer,
    firsts: Sequence[str],
    seconds: Sequence[str] | None,
    max_seq_length: int,
) -> dict[str, np.ndarray]:
    """``[CLS] a [SEP]`` (seconds None) or ``[CLS] a [SEP] b [SEP]`` rows, padded.

    A single text is cut at ``max_seq_length - 2`` tokens; a pair too long is cut
    longest-first to ``max_seq_length - 3``.

    Returns:
      ENCODER_INPUTS as in :func:`pack`.
    """
    min_length = 2 if seconds is None else 3
    if max_seq_length <= min_length:
        raise UserError(f"max_seq_length must exceed {min_length}, got {max_seq_length}")
    first_ids = tokenizer.encode_batch_ids(list(firsts)) if firsts else []
    rows = []
    if seconds is None:
        for first in first_ids:
            rows.append(tokenizer.build_inputs(first[: max_seq_length - 2]))
    else:
        second_ids = tokenizer.encode_batch_ids(list(seconds)) if seconds else []
        for first, second in zip(first_ids, second_ids, strict=True):
            truncate_pair(first, second, max_seq_length - 3)
            rows.append(tokenizer.build_inputs(first, second))
    return pack(rows, max_seq_length, tokenizer.pad_id)


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
