"""Pre-training instances (NSP pairs or packed sequences) from a block of tokenized documents.

Work is split in two steps so that a resumed pipeline can skip data cheaply:

* *Planning* decides which tokens form each instance. It reads only sentence lengths and draws
  from a seeded `random.Random`, so counting the instances of a block needs neither its tokens
  nor any array work. A plan is an int64 array `[n, 5]`: for every instance the half-open spans
  `[a_start, a_end)` and `[b_start, b_end)` of the block's flat token array (the documents'
  tokens concatenated in order) and the next-sentence label. Packed instances have an empty B.
* *Materialising* turns planned rows into fixed-length arrays with a few vectorised gathers.

NSP planning follows the logic of the original BERT `create_pretraining_data.py`: one target
length per document (`max_num_tokens`, or with probability `short_seq_prob` a uniform length in
`[2, max_num_tokens]`); sentences accumulate into a chunk until it reaches the target or the
document ends; A is a random number of the chunk's first sentences; B is the rest of the chunk,
or with probability `nsp_random_prob` a run of sentences (about the target length) from a
random start in another document, in which case the chunk's unused sentences are put back; the
pair is cut to `max_num_tokens` from the longer side, each token from the front or the back
with equal chance. Two deliberate differences:

* The random document is drawn from the same block (the original drew from the whole corpus
  held in memory), which keeps memory bounded by the block.
* A chunk always holds at least two sentences while the document goes on (a sentence reaching
  the target alone takes the next one too), and a document's last sentence left alone makes no
  instance. The original forced a random B on every one-sentence chunk, which biases the labels
  towards random B; here they stay at half and half.

Packing (MLM only) fills each sequence greedily with whole consecutive sentences of the block,
crossing document boundaries (as RoBERTa's FULL-SENTENCES, without a separator); a sentence
longer than the budget is cut, its remainder starting the next sequence. Materialised with the
block's document starts, a packed row also gets position ids that restart at 0 on the first
token of each document after the row's first (ModernBERT's unpadded sequences: the model then
lets each document's part attend only to itself).
"""

import bisect
import random
from collections.abc import Sequence

import numpy as np

A_START, A_END, B_START, B_END, LABEL = range(5)  # columns of a plan
PLAN_COLUMNS = 5
IS_NEXT, RANDOM_NEXT = 0, 1  # next-sentence labels, as in BERT (1 means B is random)


def _truncated_lengths(len_a: int, len_b: int, max_num_tokens: int) -> tuple[int, int]:
    """Lengths left by removing one token at a time from the longer side (B on a tie)."""
    if len_a + len_b <= max_num_tokens:
        return len_a, len_b
    kept_a = min(len_a, max(max_num_tokens - len_b, (max_num_tokens + 1) // 2))
    return kept_a, max_num_tokens - kept_a


def _trim(start: int, end: int, kept: int, rng: random.Random) -> tuple[int, int]:
    """Cuts `[start, end)` to `kept` tokens, each removed one from the front or back at random."""
    removed = end - start - kept
    if removed <= 0:
        return start, end
    from_front = rng.getrandbits(removed).bit_count()  # Binomial(removed, 1/2)
    return start + from_front, end - (removed - from_front)


def plan_nsp(
    sentence_lengths: Sequence[int],
    document_splits: Sequence[int],
    max_num_tokens: int,
    short_seq_prob: float,
    nsp_random_prob: float,
    rng: random.Random,
) -> np.ndarray:
    """Plans the sentence-pair instances of a block of documents.

    Args:
      sentence_lengths: token count of every sentence of the block, documents in order; [S].
      document_splits: document d holds sentences `[splits[d], splits[d + 1])`; [D + 1].
      max_num_tokens: tokens of A plus B (sequence length minus 3); at least 2.
      short_seq_prob: chance that a document's target length is drawn in `[2, max_num_tokens]`.
      nsp_random_prob: chance that B is taken from another document (label 1).
      rng: the only source of randomness.

    Returns:
      The plan, int64 [n, 5] (see the module doc), in document order.
    """
    lengths = [int(x) for x in sentence_lengths]
    splits = [int(x) for x in document_splits]
    offsets = [0] * (len(lengths) + 1)  # offsets[s]: flat position of sentence s
    for s, length in enumerate(lengths):
        offsets[s + 1] = offsets[s] + length
    num_documents = len(splits) - 1
    rows: list[tuple[int, int, int, int, int]] = []
    for doc in range(num_documents):
        first, stop = splits[doc], splits[doc + 1]
        target = max_num_tokens
        if rng.random() < short_seq_prob:
            target = rng.randint(2, max_num_tokens)
        chunk_start, chunk_length, i = first, 0, first
        while i < stop:
            chunk_length += lengths[i]
            if i == stop - 1 or (chunk_length >= target and i > chunk_start):
                if i == chunk_start:  # the document's last sentence, alone: no pair to make
                    break
                a_end = chunk_start + rng.randint(1, i - chunk_start)
                if rng.random() < nsp_random_prob:
                    label = RANDOM_NEXT
                    target_b = target - (offsets[a_end] - offsets[chunk_start])
                    other = doc
                    if num_documents > 1:
                        other = rng.randrange(num_documents - 1)
                        other += other >= doc
                    b_first = rng.randrange(splits[other], splits[other + 1])
                    b_stop, length_b = b_first, 0
                    while b_stop < splits[other + 1]:
                        length_b += lengths[b_stop]
                        b_stop += 1
                        if length_b >= target_b:
                            break
                    b_start, b_end = offsets[b_first], offsets[b_stop]
                    i = a_end - 1  # put the chunk's unused sentences back
                else:
                    label = IS_NEXT
                    b_start, b_end = offsets[a_end], offsets[i + 1]
                a_start, a_stop = offsets[chunk_start], offsets[a_end]
                kept_a, kept_b = _truncated_lengths(
                    a_stop - a_start, b_end - b_start, max_num_tokens
                )
                a_start, a_stop = _trim(a_start, a_stop, kept_a, rng)
                b_start, b_end = _trim(b_start, b_end, kept_b, rng)
                rows.append((a_start, a_stop, b_start, b_end, label))
                chunk_start, chunk_length = i + 1, 0
            i += 1
    return np.asarray(rows, dtype=np.int64).reshape(-1, PLAN_COLUMNS)


def plan_packed(sentence_lengths: Sequence[int], max_num_tokens: int) -> np.ndarray:
    """Plans packed single-segment instances over the block's sentences (see the module doc).

    Args:
      sentence_lengths: token count of every sentence of the block, in order; [S].
      max_num_tokens: tokens per instance (sequence length minus 2).

    Returns:
      The plan, int64 [n, 5], B empty and label 0, in block order.
    """
    boundaries = np.concatenate([[0], np.cumsum(sentence_lengths, dtype=np.int64)]).tolist()
    total = boundaries[-1]
    rows = []
    start = 0
    while start < total:
        limit = start + max_num_tokens
        end = boundaries[bisect.bisect_right(boundaries, limit) - 1]
        if end <= start:  # the next sentence alone exceeds the budget: cut it
            end = limit
        rows.append((start, end, end, end, IS_NEXT))
        start = end
    return np.asarray(rows, dtype=np.int64).reshape(-1, PLAN_COLUMNS)


def materialize(
    plan: np.ndarray,
    tokens: np.ndarray,
    word_starts: np.ndarray | None,
    seq_length: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    pairs: bool,
    document_starts: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Builds `[CLS] A [SEP] (B [SEP])` sequences, padded with `pad_id`, from planned rows.

    Args:
      plan: int64 [n, 5] rows of `plan_nsp` or `plan_packed`.
      tokens: the block's flat token ids; [T].
      word_starts: the block's flat word-start flags, [T], or None to skip them.
      seq_length: length of every output row; spans must fit (3 or 2 special tokens).
      cls_id, sep_id, pad_id: special token ids.
      pairs: True for two segments (NSP), False for one (packing).
      document_starts: packing: the block's flat flags, [T] bool, True on each document's first
        token; None to skip position ids.

    Returns:
      input_ids, segment_ids, input_mask: int32 [n, seq_length]; next_sentence_labels: int32
      [n]; word_starts: int32 [n, seq_length] (1 on special tokens), if asked for;
      position_ids: int32 [n, seq_length], with document_starts: 0 at the [CLS] and at each
      document's first token after the row's first, counting up from there.
    """
    a_start, b_start = plan[:, A_START, None], plan[:, B_START, None]  # [n, 1]
    len_a = plan[:, A_END, None] - a_start  # [n, 1]
    len_b = plan[:, B_END, None] - b_start  # [n, 1]
    used = len_a + len_b + (3 if pairs else 2)  # [n, 1]
    if used.size and used.max() > seq_length:
        raise ValueError(f"an instance of {used.max()} tokens exceeds seq_length {seq_length}")
    column = np.arange(seq_length, dtype=np.int64)[None, :]  # [1, L]
    in_a = (column >= 1) & (column <= len_a)  # [n, L]
    b_first = len_a + 2  # [n, 1]
    in_b = (column >= b_first) & (column < b_first + len_b)  # [n, L]
    is_text = in_a | in_b
    source = np.where(in_a, a_start + column - 1, b_start + column - b_first)  # [n, L]
    source = np.where(is_text, source, 0)
    input_mask = column < used  # [n, L]
    specials = np.where(input_mask, sep_id, pad_id)  # [n, L]
    specials[:, 0] = cls_id
    input_ids = np.where(is_text, tokens[source], specials).astype(np.int32)
    segment_ids = (column >= b_first) & input_mask & pairs  # [n, L]; all 0 when packing
    out = {
        "input_ids": input_ids,
        "segment_ids": segment_ids.astype(np.int32),
        "input_mask": input_mask.astype(np.int32),
        "next_sentence_labels": plan[:, LABEL].astype(np.int32),
    }
    if word_starts is not None:
        out["word_starts"] = np.where(is_text, word_starts[source], 1).astype(np.int32)
    if document_starts is not None:  # a part starts at the [CLS] and at each later document
        restart = in_a & (source > a_start) & document_starts[source]  # [n, L]
        restart[:, 0] = True
        part_start = np.maximum.accumulate(np.where(restart, column, 0), axis=1)  # [n, L]
        out["position_ids"] = (column - part_start).astype(np.int32)
    return out
