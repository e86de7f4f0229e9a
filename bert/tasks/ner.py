"""CoNLL-2003 named-entity recognition: reader, token features, and predictions back to words.

A file holds one token per line (``word POS chunk NER``, IOB2 tags; the tag column can be
another), a blank line between sentences and ``-DOCSTART-`` lines between documents. Each word
is split into sub-tokens; its tag goes on the first sub-token and the others get label -1
(ignored by the loss and metric). Training rows cut a long sentence; evaluation rows are
overlapping windows that score every word once.
"""

import dataclasses
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

from bert.tasks import features
from input_pipeline import tokenizers
from util import atomic, paths, text_files
from util.errors import UserError

PathLike = str | os.PathLike
IGNORE = -1  # label of sub-tokens that do not start a word, and of special and padding tokens
OUTSIDE = "O"
# Tag schemes a file may use (checked as it is read); entities are decoded from any of them by
# conlleval's rules (bert/tasks/metrics.py).
SCHEMES = ("iob1", "iob2", "iobes")
# Syntactic chunk types (CoNLL-2000; CoNLL-2003's third column): a tag column holding them
# is the chunk column, not the NER one.
CHUNK_TYPES = frozenset(
    {"NP", "VP", "PP", "ADJP", "ADVP", "SBAR", "PRT", "INTJ", "CONJP", "LST", "UCP"}
)


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One sentence: its words and their IOB2 tags (same length)."""

    words: list[str]
    tags: list[str]


def read_conll(
    path: PathLike,
    *,
    tag_column: int = -1,
    scheme: str = "iob2",
    repaired: list[str] | None = None,
    hint: str = "",
) -> list[Sentence]:
    """Reads a CoNLL file: the word in column 0, its NER tag in column ``tag_column``.

    Args:
      path: the file, one ``word ... TAG`` line per token.
      tag_column: the tag's column, counted from 0 (the word) as Python indexes a list; -1,
        the last column, is the layout of CoNLL-2003 (``word POS chunk NER``) and MSRA
        (``char<TAB>tag``).
      scheme: the tags' scheme, one of SCHEMES (`check_tag` says what each allows).
      repaired: None: a tag out of its scheme's place raises. A list: such tags of IOB1/IOB2
        are repaired as `check_tag` does, each one's file and line appended to the list.
      hint: ends the message of a tag out of place (how to ask for repair).

    Raises:
      UserError, naming file and line: a line with fewer than two columns, or with another
        number of columns than the file's first token line; a ``tag_column`` outside the
        columns or on the word; a tag the scheme does not allow there; a syntactic chunk tag
        (``B-NP``, ``I-VP``, ...) in the tag column, with the column that holds NER tags instead.
    """
    path = paths.path(path)
    sentences = []
    words: list[str] = []
    tags: list[str] = []
    first = None  # (line number, columns) of the first token line
    index = 0  # the tag column, 1 to columns - 1
    where = ""  # of the last token line
    for line_number, line in text_files.lines(path):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                check_tag(None, tags[-1], where, scheme)
                sentences.append(Sentence(words, tags))
            words, tags = [], []
            continue
        where = f"{path}:{line_number}"
        if first is None:
            first = (line_number, len(fields))
            index = _tag_index(tag_column, fields, line, where)
        elif len(fields) != first[1]:
            raise UserError(
                f"{where}: {len(fields)} columns, but the first token line ({path}:{first[0]}) "
                f"has {first[1]}; every token line needs the same columns"
            )
        tag = fields[index]
        if _entity_type(tag) in CHUNK_TYPES:
            raise UserError(_chunk_tags_message(path, where, tag, tag_column, first[1]))
        kept = check_tag(tag, tags[-1] if tags else OUTSIDE, where, scheme,
                         repaired is not None, hint)  # fmt: skip
        if kept != tag:
            repaired.append(where)
        words.append(fields[0])
        tags.append(kept)
    if words:
        check_tag(None, tags[-1], where, scheme)
        sentences.append(Sentence(words, tags))
    return sentences


def _tag_index(tag_column: int, fields: list[str], line: str, where: str) -> int:
    """``tag_column`` as an index into the file's columns, checked against its first line."""
    columns = len(fields)
    if columns < 2:
        raise UserError(f"{where}: expected 'word ... TAG' columns, got {line.strip()[:80]!r}")
    if not -columns <= tag_column < columns:
        raise UserError(
            f"{where}: tag_column={tag_column} (config.tag_column) is outside the line's "
            f"{columns} columns (0 to {columns - 1}, or -1 for the last)"
        )
    index = tag_column % columns
    if index == 0:
        raise UserError(f"{where}: tag_column={tag_column} (config.tag_column) is the word")
    return index


def _entity_type(tag: str) -> str:
    """The type of an IOB tag (``B-NP``: ``NP``), or the tag itself without a prefix."""
    return tag.partition("-")[2] or tag


def _is_ner_tag(tag: str) -> bool:
    prefix, _, entity = tag.partition("-")
    return tag == OUTSIDE or (prefix in ("B", "I") and bool(entity) and entity not in CHUNK_TYPES)


def _ner_like_columns(path: pathlib.Path, columns: int, skip: set[int]) -> list[int]:
    """The columns (not in ``skip``) holding only IOB tags of entity types, some not ``O``.

    Reads the file again, on the error path only; stops early at bytes that are not text.
    """
    candidates = {c for c in range(1, columns) if c not in skip}
    typed: set[int] = set()
    try:
        for _, line in text_files.lines(path):
            fields = line.split()
            if len(fields) != columns or fields[0] == "-DOCSTART-":
                continue
            candidates = {c for c in candidates if _is_ner_tag(fields[c])}
            typed |= {c for c in candidates if fields[c] != OUTSIDE}
    except UserError:
        pass
    return sorted(candidates & typed)


def _chunk_tags_message(
    path: pathlib.Path, where: str, tag: str, tag_column: int, columns: int
) -> str:
    index = tag_column % columns
    found = _ner_like_columns(path, columns, {index})
    if found:
        hint = f"column {found[0]} looks like NER tags: set config.tag_column={found[0]}"
    else:
        hint = "no other column holds NER tags (O, B-TYPE, I-TYPE): check the file's layout"
    return (
        f"{where}: the tag column, {index} (config.tag_column={tag_column}; column 0 is the "
        f"word), holds the syntactic chunk tag {tag[:80]!r}, not an NER tag; {hint}"
    )


def check_tag(
    tag: str | None,
    previous: str,
    where: str,
    scheme: str = "iob2",
    repair: bool = False,
    hint: str = "",
) -> str | None:
    """`tag`, checked: a UserError naming `where` unless it may follow `previous` (``O`` at a
    sentence's start) in `scheme`; `tag` None checks the end of a sentence after `previous`.

    iob2: ``I-X`` continues a ``B-X`` or ``I-X``. iob1: an entity starts with ``I-X``, and
    ``B-X`` only follows an entity of type X (two entities side by side). iobes: ``B-X I-X* E-X``
    or ``S-X``, nothing else inside an entity.

    With `repair` (iob1 and iob2), an entity's start in the other prefix is not an error: it is
    returned as `scheme` writes it (iob2: ``I-X`` after ``O`` becomes ``B-X``), the entity that
    conlleval reads there. `hint` ends the message of such an error (how to ask for repair).
    """
    if scheme not in SCHEMES:
        raise UserError(f"tag scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
    prev_prefix, _, prev_type = previous.partition("-")
    inside = scheme == "iobes" and prev_prefix in ("B", "I")  # an IOBES entity left open
    if tag is None or tag == OUTSIDE:
        if inside:
            end = "the sentence ends" if tag is None else f"tag {tag!r} follows"
            raise UserError(f"{where}: {end} inside the IOBES entity {previous[:80]!r} (E-"
                            f"{prev_type[:80]} ends it)")  # fmt: skip
        return tag
    prefix, _, entity = tag.partition("-")
    allowed = ("B", "I", "E", "S") if scheme == "iobes" else ("B", "I")
    if prefix not in allowed or not entity:
        kinds = "O, B-, I-, E- or S-TYPE" if scheme == "iobes" else "O, B-TYPE or I-TYPE"
        raise UserError(f"{where}: tag {tag[:80]!r} is not {scheme.upper()} ({kinds})")
    continues = prev_prefix in ("B", "I") and prev_type == entity
    starts = {"iob2": "B", "iob1": "I"}.get(scheme)  # the prefix an entity starts with
    if starts and prefix != starts and not continues:
        fixed = f"{starts}-{entity}"
        if repair:
            return fixed
        other = {"iob2": "IOB1", "iob1": "IOB2: set the tag scheme to iob2"}[scheme]
        raise UserError(f"{where}: tag {tag[:80]!r} follows {previous[:80]!r}; {scheme.upper()} "
                        f"starts with {starts}- ({prefix}- after O is {other}; conlleval reads "
                        f"it as {fixed[:80]!r}{hint})")  # fmt: skip
    if scheme == "iobes" and inside != (prefix in ("I", "E")) or inside and not continues:
        raise UserError(f"{where}: tag {tag[:80]!r} follows {previous[:80]!r}; IOBES is B-X I-X* "
                        "E-X or S-X")  # fmt: skip
    return tag


def label_list(sentences: Iterable[Sentence]) -> list[str]:
    """The tags seen in the data: ``O`` first, then by entity type, ``B-`` before ``I-``."""
    seen = {tag for sentence in sentences for tag in sentence.tags}
    seen.add(OUTSIDE)
    entities = sorted(t for t in seen if t != OUTSIDE)
    return [OUTSIDE, *sorted(entities, key=lambda t: (t[2:], t[0]))]


def _tag_ids(sentences: Sequence[Sentence], labels: Sequence[str]) -> list[list[int]]:
    label_ids = {tag: i for i, tag in enumerate(labels)}
    ids = []
    for sentence in sentences:
        for word, tag in zip(sentence.words, sentence.tags, strict=True):
            if tag not in label_ids:
                raise UserError(f"tag {tag!r} of word {word!r} is not in labels {labels}")
        ids.append([label_ids[tag] for tag in sentence.tags])
    return ids


@dataclasses.dataclass(frozen=True)
class _Tokens:
    """One sentence as sub-tokens: their ids, and where each word's first one sits."""

    ids: list[int]
    word_offsets: np.ndarray  # [words] int, the index of each word's first sub-token in ids


def _tokenize(sentences: Sequence[Sentence], tokenizer: tokenizers.Tokenizer) -> list[_Tokens]:
    """Each word's sub-tokens; a word the tokenizer turns into none becomes ``[UNK]``."""
    flat_words = [word for sentence in sentences for word in sentence.words]
    flat_ids = tokenizer.encode_batch_ids(flat_words) if flat_words else []
    result = []
    position = 0
    for sentence in sentences:
        end = position + len(sentence.words)
        pieces = [ids or [tokenizer.unk_id] for ids in flat_ids[position:end]]
        position = end
        lengths = [len(p) for p in pieces]
        offsets = np.cumsum([0, *lengths[:-1]]) if pieces else np.zeros(0, np.int64)
        result.append(_Tokens([i for p in pieces for i in p], offsets))
    return result


@dataclasses.dataclass(frozen=True)
class _Window:
    """Sub-tokens ``start`` to ``start + length`` of one sentence, and the words it scores."""

    sentence: int
    start: int
    length: int
    words: np.ndarray  # [scored words] int, each with its first sub-token in the window


def _check_length(max_seq_length: int) -> None:
    if max_seq_length <= 2:
        raise UserError(f"max_seq_length must exceed 2, got {max_seq_length}")


def _arrays(
    windows: Sequence[_Window],
    tokens: Sequence[_Tokens],
    tag_ids: Sequence[Sequence[int]],
    tokenizer: tokenizers.Tokenizer,
    max_seq_length: int,
) -> dict[str, np.ndarray]:
    """One ``[CLS] sub-tokens [SEP]`` row per window, labels on the words it scores."""
    shape = (len(windows), max_seq_length)
    label = np.full(shape, IGNORE, np.int32)  # [rows, length]
    word_ids = np.full(shape, -1, np.int32)  # [rows, length]
    rows = []
    for r, window in enumerate(windows):
        sentence = tokens[window.sentence]
        rows.append(
            tokenizer.build_inputs(sentence.ids[window.start : window.start + window.length])
        )
        positions = sentence.word_offsets[window.words] - window.start + 1  # after [CLS]
        label[r, positions] = np.asarray(tag_ids[window.sentence], np.int32)[window.words]
        word_ids[r, positions] = window.words
    return {
        **features.pack(rows, max_seq_length, tokenizer.pad_id),
        "label": label,
        "word_starts": (word_ids >= 0).astype(np.int32),
        "word_ids": word_ids,
        "sentence_ids": np.array([w.sentence for w in windows], np.int32).reshape(-1),
    }


def convert_sentences_to_features(
    sentences: Sequence[Sentence],
    labels: Sequence[str],
    tokenizer: tokenizers.Tokenizer,
    max_seq_length: int,
) -> dict[str, np.ndarray]:
    """Training features: one ``[CLS] tokens [SEP]`` row per sentence, tokenized word by word.

    A word the tokenizer turns into no token at all (e.g. a lone control character) becomes
    ``[UNK]``, so that every word keeps a position. A sentence too long is cut at the last
    sub-token that fits; words cut away get no position and no label (:func:`count_cut`
    counts them; :func:`window_features` keeps every word, for evaluation).

    Returns:
      "input_ids", "segment_ids", "input_mask": int32 [num_sentences, max_seq_length];
      "label": int32 [num_sentences, max_seq_length], the tag id on each word's first
        sub-token and -1 elsewhere;
      "word_starts": int32 [num_sentences, max_seq_length], 1 on each word's first sub-token.
    """
    _check_length(max_seq_length)
    tokens = _tokenize(sentences, tokenizer)
    tag_ids = _tag_ids(sentences, labels)
    room = max_seq_length - 2
    windows = [
        _Window(s, 0, min(len(t.ids), room), np.flatnonzero(t.word_offsets < room))
        for s, t in enumerate(tokens)
    ]
    arrays = _arrays(windows, tokens, tag_ids, tokenizer, max_seq_length)
    del arrays["word_ids"], arrays["sentence_ids"]
    return arrays


def count_cut(sentences: Sequence[Sentence], features: dict[str, np.ndarray]) -> tuple[int, int]:
    """(sentences that lost words, words lost) in :func:`convert_sentences_to_features`' rows.

    A sentence whose cut falls inside its last word keeps that word (on its first sub-token)
    and is not counted.
    """
    kept = features["word_starts"].sum(axis=1)  # [num_sentences]
    lost = np.array([len(s.words) for s in sentences]) - kept
    return int((lost > 0).sum()), int(lost.sum())


def _spans(num_tokens: int, room: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) of windows of at most ``room`` sub-tokens, ``stride`` apart, that
    together cover ``num_tokens``."""
    spans = [(0, min(num_tokens, room))]
    while spans[-1][0] + spans[-1][1] < num_tokens:
        start = spans[-1][0] + stride
        spans.append((start, min(num_tokens - start, room)))
    return spans


def _best_spans(spans: Sequence[tuple[int, int]], positions: np.ndarray) -> np.ndarray:
    """[positions] the span where each position has the most context, as BERT's SQuAD rule.

    A position's score in a span holding it is the smaller of its sub-tokens before and after
    it in the span, plus 0.01 times the span's length; the first span wins a tie.
    """
    start = np.array([s for s, _ in spans])[:, None]  # [spans, 1]
    length = np.array([n for _, n in spans])[:, None]  # [spans, 1]
    before = positions[None, :] - start  # [spans, positions]
    after = start + length - 1 - positions[None, :]  # [spans, positions]
    score = np.minimum(before, after) + 0.01 * length
    score = np.where((before >= 0) & (after >= 0), score, -np.inf)
    return np.argmax(score, axis=0)


def window_features(
    sentences: Sequence[Sentence],
    labels: Sequence[str],
    tokenizer: tokenizers.Tokenizer,
    max_seq_length: int,
    window_stride: int,
) -> dict[str, np.ndarray]:
    """Evaluation and prediction features that score every word.

    A sentence longer than ``max_seq_length - 2`` sub-tokens becomes several windows of that
    many sub-tokens, each ``window_stride`` sub-tokens after the previous one (0: half a
    window; the last one shorter). Each word is scored in one window only: the one where its
    first sub-token has the most context (:func:`_best_spans`); a word longer than a window is
    scored on its first sub-token all the same. A sentence that fits gives the row of
    :func:`convert_sentences_to_features`.

    Returns:
      "input_ids", "segment_ids", "input_mask", "label", "word_starts": int32 [rows,
        max_seq_length] as in :func:`convert_sentences_to_features`, with the label and word
        start of a word only in the window that scores it;
      "word_ids": int32 [rows, max_seq_length], the index of that word in its sentence, -1
        elsewhere;
      "sentence_ids": int32 [rows], the sentence of each row.
    """
    _check_length(max_seq_length)
    room = max_seq_length - 2
    if window_stride == 0:  # half a window
        window_stride = max(1, room // 2)
    if not 1 <= window_stride <= room:
        raise UserError(
            f"window_stride={window_stride} (config.window_stride) must be 1 to "
            f"max_seq_length - 2 = {room} sub-tokens, or 0 for half of that"
        )
    tokens = _tokenize(sentences, tokenizer)
    tag_ids = _tag_ids(sentences, labels)
    windows = []
    for s, sentence in enumerate(tokens):
        spans = _spans(len(sentence.ids), room, window_stride)
        best = _best_spans(spans, sentence.word_offsets)  # [words]
        for w, (start, length) in enumerate(spans):
            windows.append(_Window(s, start, length, np.flatnonzero(best == w)))
    return _arrays(windows, tokens, tag_ids, tokenizer, max_seq_length)


def word_values(
    values: np.ndarray, features: dict[str, np.ndarray], sentences: Sequence[Sentence]
) -> list[np.ndarray]:
    """Per-token values (class ids, logits, ...) back to one per word: its first sub-token's.

    Args:
      values: [rows, max_seq_length, ...], e.g. the argmax of the logits, or the logits.
      features: the :func:`window_features` the values were computed from.
      sentences: the sentences the features were made from.

    Returns:
      One array per sentence, [words, ...].

    Raises:
      ValueError: the features do not score every word of ``sentences`` exactly once.
    """
    values = np.asarray(values)
    word_ids, sentence_ids = features["word_ids"], features["sentence_ids"]
    if values.shape[:2] != word_ids.shape or sentence_ids.shape != values.shape[:1]:
        raise ValueError(
            f"values {values.shape}, word_ids {word_ids.shape} and sentence_ids "
            f"{sentence_ids.shape} do not match"
        )
    counts = np.array([len(s.words) for s in sentences], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])  # [sentences + 1]
    rows, columns = np.nonzero(word_ids >= 0)
    sentence, word = sentence_ids[rows], word_ids[rows, columns]
    if (sentence >= len(sentences)).any() or (word >= counts[sentence]).any():
        raise ValueError("a word id beyond its sentence: features of other sentences?")
    flat = offsets[sentence] + word  # [scored positions]
    if not (np.bincount(flat, minlength=offsets[-1]) == 1).all():
        raise ValueError("features do not score every word exactly once: other sentences?")
    per_word = np.empty((offsets[-1], *values.shape[2:]), values.dtype)
    per_word[flat] = values[rows, columns]
    return [per_word[offsets[i] : offsets[i + 1]] for i in range(len(sentences))]


def predictions_to_tags(
    predictions: np.ndarray,
    features: dict[str, np.ndarray],
    sentences: Sequence[Sentence],
    labels: Sequence[str],
) -> list[list[str]]:
    """Per-token class ids [rows, max_seq_length] back to one tag per word (its first
    sub-token's prediction), one list per sentence (`word_values`)."""
    per_word = word_values(np.asarray(predictions, np.int64), features, sentences)
    return [[labels[int(i)] for i in ids] for ids in per_word]


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
