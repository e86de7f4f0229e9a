"""Semantic textual similarity: the STS benchmark and GLUE STS-B readers, sentence features.

The STS benchmark's ``sts-*.csv`` files are tab-separated despite the name: genre, file, year,
id, score, sentence1, sentence2, and a few rows carry extra source columns after those. They
are read with quoting off, taking columns 4, 5 and 6.
"""

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np

from bert.tasks import features, glue
from input_pipeline import tokenizers
from util import paths
from util.errors import UserError

PathLike = str | os.PathLike
MAX_SCORE = 5.0
SCORE_COLUMN, SENTENCE1_COLUMN, SENTENCE2_COLUMN = 4, 5, 6


@dataclasses.dataclass(frozen=True)
class Pair:
    """Two sentences and their similarity score in 0..5 (None where unlabelled)."""

    sentence1: str
    sentence2: str
    score: float | None


def _check_score(value: str, where: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise UserError(f"{where}: score {value[:80]!r} is not a number") from None
    if not (math.isfinite(score) and 0.0 <= score <= MAX_SCORE):
        raise UserError(f"{where}: score {score} is outside 0..{MAX_SCORE:g}")
    return score


def read_sts_benchmark(path: PathLike) -> list[Pair]:
    """Reads an STS benchmark file (``sts-train.csv``, ``sts-dev.csv``, ``sts-test.csv``).

    Raises:
      ValueError: a row with fewer than 7 columns, or a score that is not a number in 0..5,
        naming file and line.
    """
    path = paths.path(path)
    pairs = []
    for line, row in glue.tsv_rows(path):
        if row == [] or row == [""]:
            continue
        where = f"{path}:{line}"
        if len(row) <= SENTENCE2_COLUMN:
            raise UserError(
                f"{where}: missing column: {len(row)} fields, expected genre, file, year, "
                "id, score, sentence1, sentence2"
            )
        score = _check_score(row[SCORE_COLUMN], where)
        pairs.append(Pair(row[SENTENCE1_COLUMN], row[SENTENCE2_COLUMN], score))
    return pairs


def read_glue_stsb(path: PathLike, labeled: bool | None = None) -> list[Pair]:
    """Reads a GLUE STS-B file (header, ``sentence1``/``sentence2``/``score`` columns).

    Args:
      labeled: whether the file has scores; None: all but files named ``test*``.
    """
    examples = glue.read_examples("stsb", path, labeled)
    pairs = []
    for example in examples:
        score = example.label
        if score is not None:
            score = _check_score(str(score), f"{path}:{example.guid.rsplit(':', 1)[1]}")
        pairs.append(Pair(example.text_a, example.text_b or "", score))
    return pairs


def sentence_features(
    tokenizer: tokenizers.Tokenizer, sentences: Sequence[str], max_seq_length: int
) -> dict[str, np.ndarray]:
    """Single-sentence ``[CLS] text [SEP]`` inputs, e.g. for a bi-encoder's embeddings.

    Returns:
      "input_ids", "segment_ids", "input_mask": int32 [num_sentences, max_seq_length].
    """
    return features.encode_texts(tokenizer, sentences, None, max_seq_length)


def pair_features(
    tokenizer: tokenizers.Tokenizer, pairs: Sequence[Pair], max_seq_length: int
) -> dict[str, np.ndarray]:
    """Cross-encoder ``[CLS] s1 [SEP] s2 [SEP]`` inputs with the scores as float32 labels.

    Returns:
      As :func:`bert.tasks.glue.convert_examples_to_features` for "stsb": the ids, segment
      ids and mask [num_pairs, max_seq_length], and "label" float32 [num_pairs] (NaN where
      unscored).
    """
    inputs = features.encode_texts(
        tokenizer, [p.sentence1 for p in pairs], [p.sentence2 for p in pairs], max_seq_length
    )
    scores = [np.nan if p.score is None else p.score for p in pairs]
    return {**inputs, "label": np.array(scores, np.float32)}
