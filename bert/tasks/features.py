"""Feature helpers shared by every task family: the encoder's input names, sentence and
sentence-pair encoding with BERT's truncation, and padding rows into arrays."""

from collections.abc import Sequence

import numpy as np

from input_pipeline import tokenizers
from util.errors import UserError

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
    longest-first to ``max_seq_length - 3`` (``- 4`` for RoBERTa's ``<s> a </s></s> b </s>``).

    Returns:
      ENCODER_INPUTS as in :func:`pack`.
    """
    min_length = len(tokenizer.build_inputs([], None if seconds is None else [])[0])
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
            truncate_pair(first, second, max_seq_length - min_length)
            rows.append(tokenizer.build_inputs(first, second))
    return pack(rows, max_seq_length, tokenizer.pad_id)
