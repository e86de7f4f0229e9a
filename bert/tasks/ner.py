"""CoNLL-2003 named-entity recognition: reader, token features, and predictions back to words.

A file holds one token per line (``word POS chunk NER``, IOB2 tags), a blank line between
sentences and ``-DOCSTART-`` lines between documents. Each word is split into sub-tokens; its
tag goes on the first sub-token and the others get label -1 (ignored by the loss and metric).
"""

import dataclasses
import os
from collections.abc import Iterable, Sequence

import numpy as np

from bert.tasks import features
from input_pipeline import tokenizers
from util import atomic, paths, text_files
from util.errors import UserError

PathLike = str | os.PathLike
IGNORE = -1  # label of sub-tokens that do not start a word, and of special and padding tokens
OUTSIDE = "O"


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One sentence: its words and their IOB2 tags (same length)."""

    words: list[str]
    tags: list[str]


def read_conll(path: PathLike) -> list[Sentence]:
    """Reads a CoNLL-2003 file: the first column is the word, the last the NER tag.

    Raises:
      ValueError: a line with fewer than two columns, or a tag that is not IOB2 (``O``,
        ``B-X``, or ``I-X`` following ``B-X``/``I-X``), naming file and line.
    """
    path = paths.path(path)
    sentences = []
    words: list[str] = []
    tags: list[str] = []
    for line_number, line in text_files.lines(path):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append(Sentence(words, tags))
            words, tags = [], []
            continue
        where = f"{path}:{line_number}"
        if len(fields) < 2:
            raise UserError(f"{where}: expected 'word POS chunk NER', got {line.strip()[:80]!r}")
        tag = fields[-1]
        _check_tag(tag, tags[-1] if tags else OUTSIDE, where)
        words.append(fields[0])
        tags.append(tag)
    if words:
        sentences.append(Sentence(words, tags))
    return sentences


def _check_tag(tag: str, previous: str, where: str) -> None:
    if tag == OUTSIDE:
        return
    prefix, _, entity = tag.partition("-")
    if prefix not in ("B", "I") or not entity:
        raise UserError(f"{where}: tag {tag[:80]!r} is not IOB2 (O, B-TYPE or I-TYPE)")
    if prefix == "I" and previous[2:] != entity:
        raise UserError(f"{where}: tag {tag[:80]!r} follows {previous[:80]!r}; IOB2 starts with B-")


def label_list(sentences: Iterable[Sentence]) -> list[str]:
    """The tags seen in the data: ``O`` first, then by entity type, ``B-`` before ``I-``."""
    seen = {tag for sentence in sentences for tag in sentence.tags}
    seen.add(OUTSIDE)
    entities = sorted(t for t in seen if t != OUTSIDE)
    return [OUTSIDE, *sorted(entities, key=lambda t: (t[2:], t[0]))]


def convert_sentences_to_features(
    sentences: Sequence[Sentence],
    labels: Sequence[str],
    tokenizer: tokenizers.Tokenizer,
    max_seq_length: int,
) -> dict[str, np.ndarray]:
    """Tokenizes sentences word by word into ``[CLS] tokens [SEP]`` features.

    A word the tokenizer turns into no token at all (e.g. a lone control character) becomes
    ``[UNK]``, so that every word keeps a position. A sentence too long is cut at the last
    sub-token that fits; words cut away get no position (see :func:`predictions_to_tags`).

    Returns:
      "input_ids", "segment_ids", "input_mask": int32 [num_sentences, max_seq_length];
      "label": int32 [num_sentences, max_seq_length], the tag id on each word's first
        sub-token and -1 elsewhere;
      "word_starts": int32 [num_sentences, max_seq_length], 1 on each word's first sub-token.
    """
    if max_seq_length <= 2:
        raise UserError(f"max_seq_length must exceed 2, got {max_seq_length}")
    label_ids = {tag: i for i, tag in enumerate(labels)}
    flat_words = [word for sentence in sentences for word in sentence.words]
    flat_ids = tokenizer.encode_batch_ids(flat_words) if flat_words else []
    shape = (len(sentences), max_seq_length)
    label = np.full(shape, IGNORE, np.int32)  # [sentences, length]
    word_starts = np.zeros(shape, np.int32)  # [sentences, length]
    rows = []
    position = 0
    for s, sentence in enumerate(sentences):
        ids: list[int] = []
        for word, tag in zip(sentence.words, sentence.tags, strict=True):
            pieces = flat_ids[position] or [tokenizer.unk_id]
            position += 1
            if len(ids) < max_seq_length - 2:
                if tag not in label_ids:
                    raise UserError(f"tag {tag!r} of word {word!r} is not in labels {labels}")
                start = len(ids) + 1  # after [CLS]
                label[s, start] = label_ids[tag]
                word_starts[s, start] = 1
            ids.extend(pieces)
        rows.append(tokenizer.build_inputs(ids[: max_seq_length - 2]))
    return {
        **features.pack(rows, max_seq_length, tokenizer.pad_id),
        "label": label,
        "word_starts": word_starts,
    }


def predictions_to_tags(
    predictions: np.ndarray,
    word_starts: np.ndarray,
    sentences: Sequence[Sentence],
    labels: Sequence[str],
    fill: str = OUTSIDE,
) -> list[list[str]]:
    """Per-token class ids back to one tag per word (the first sub-token's prediction).

    Args:
      predictions: int [num_sentences, max_seq_length], e.g. the argmax of the logits.
      word_starts: the features' "word_starts".
      sentences: the sentences the features were made from.
      fill: the tag of words truncated away (no position in the features).

    Returns:
      One list of tags per sentence, as long as its words.
    """
    predictions = np.asarray(predictions)
    if predictions.shape != word_starts.shape or len(sentences) != len(predictions):
        raise ValueError(
            f"predictions {predictions.shape}, word_starts {word_starts.shape} and "
            f"{len(sentences)} sentences do not match"
        )
    result = []
    for prediction, starts, sentence in zip(predictions, word_starts, sentences, strict=True):
        tags = [labels[int(i)] for i in prediction[starts.astype(bool)]]
        if len(tags) > len(sentence.words):
            raise ValueError("more word starts than words: features of other sentences?")
        result.append(tags + [fill] * (len(sentence.words) - len(tags)))
    return result


def write_conll_predictions(
    path: PathLike, sentences: Sequence[Sentence], predicted: Sequence[Sequence[str]]
) -> None:
    """Writes ``word gold predicted`` lines, a blank line after each sentence (conlleval input).

    The file is written under a temporary name and renamed, so a failure leaves none behind.
    """
    if len(sentences) != len(predicted):
        raise ValueError(f"{len(sentences)} sentences but {len(predicted)} predictions")
    lines = []
    for sentence, tags in zip(sentences, predicted, strict=True):
        if len(tags) != len(sentence.words):
            raise ValueError(f"{len(sentence.words)} words but {len(tags)} predicted tags")
        for word, gold, tag in zip(sentence.words, sentence.tags, tags, strict=True):
            lines.append(f"{word} {gold} {tag}\n")
        lines.append("\n")
    atomic.write_atomically(path, "".join(lines))
