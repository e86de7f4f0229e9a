"""Packing: several short sequences one after another in one row, so that little of a batch
is padding.

A packed row holds whole sequences ([CLS] ... [SEP], their real tokens only) back to back,
then padding. Its `position_ids` restart at 0 where each sequence starts. BertModel gives each
sequence its own positions and lets its tokens attend only to each other (bert/model.py), so
every token's hidden state is the one it has alone in a row. A per-token loss (NER) is then
the same sum over the same labels, on far fewer positions than batches padded to their longest
row, even in length buckets. A bi-encoder packs the texts of all its sides alike and pools each
one's own tokens (`sequence_places`, bert/heads.py `pool_packed`).
"""

import numpy as np


def first_fit(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Sequences into rows of `capacity` tokens, longest first, each into the first row with
    room (first-fit decreasing; equal lengths in index order).

    Args:
      lengths: [n] tokens of each sequence, each at most `capacity`.

    Returns:
      The rows, each a list of indices into `lengths` in the order they sit in the row.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in np.argsort(-np.asarray(lengths), kind="stable"):
        n = int(lengths[i])
        if n > capacity:
            raise ValueError(f"a sequence of {n} tokens does not fit a row of {capacity}")
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(int(i))
                room[r] -= n
                break
        else:
            rows.append([int(i)])
            room.append(capacity - n)
    return rows


def pack(
    arrays: dict[str, np.ndarray],
    lengths: np.ndarray,
    rows: list[list[int]],
    num_rows: int,
    fill: dict[str, int],
    length: int = 0,
) -> dict[str, np.ndarray]:
    """The packed rows of `arrays`' sequences.

    Args:
      arrays: per-token arrays, each [n, length]: input ids, masks, token labels.
      lengths: [n] tokens of each sequence (its first `lengths[i]` positions are real).
      rows: which sequences go in each row, in order (`first_fit`).
      num_rows: the rows returned; those beyond `len(rows)` are all padding.
      fill: key -> the value of positions holding no token (0 for keys not named), e.g. the
        "no label" value of a label array.
      length: the packed rows' length (0: the arrays' own).

    Returns:
      Each array as [num_rows, length], and "position_ids" [num_rows, length] int32. A row's
      padding continues its last sequence's positions (the mask hides it either way).
    """
    length = length or next(iter(arrays.values())).shape[1]
    if len(rows) > num_rows:
        raise ValueError(f"{len(rows)} packed rows do not fit {num_rows}")
    out = {k: np.full((num_rows, length), fill.get(k, 0), v.dtype) for k, v in arrays.items()}
    positions = np.tile(np.arange(length, dtype=np.int32), (num_rows, 1))  # [num_rows, length]
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            n = int(lengths[i])
            for key, value in arrays.items():
                out[key][r, at : at + n] = value[i, :n]
            positions[r, at:] = np.arange(length - at, dtype=np.int32)
            at += n
    out["position_ids"] = positions
    return out


# First-fit leaves some room unused in most rows: the rows of an average batch hold this much
# more than its tokens (on CoNLL-2003 batches of 32 in rows of 64, the fewest positions in all)
ROOM = 1.1


def rows_for(lengths: np.ndarray, batch_size: int, row_length: int, multiple: int) -> int:
    """Rows of `row_length` tokens for an average batch of `batch_size` sequences of
    `lengths`, with `ROOM`, rounded up to a multiple of `multiple`."""
    rows = int(np.ceil(ROOM * batch_size * float(np.mean(lengths)) / row_length))
    return max(-(-rows // multiple) * multiple, multiple)


def sequence_places(
    lengths: np.ndarray, rows: list[list[int]], num_rows: int, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where `pack` puts each sequence: for pooling each one's tokens on its own.

    Args: as `pack`'s (`length` the packed rows' length).

    Returns:
      sequence_ids: [num_rows, length] int32, the index (into `lengths`) of the sequence each
        position holds; len(lengths) where it holds none (padding).
      starts: [len(lengths)] int32, each sequence's first position as an index into the rows
        laid end to end (row * length + offset).
    """
    count = len(lengths)
    sequence_ids = np.full((num_rows, length), count, np.int32)
    starts = np.zeros(count, np.int32)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            n = int(lengths[i])
            sequence_ids[r, at : at + n] = i
            starts[i] = r * length + at
            at += n
    return sequence_ids, starts
