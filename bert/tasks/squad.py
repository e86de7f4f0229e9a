"""SQuAD v1.1 / v2.0 data: reading, sliding-window features, n-best span decoding.

Pure Python and numpy (no JAX): the fine-tuning loop feeds :func:`features_to_arrays` to the
model and hands the start/end logits back to :func:`decode_predictions`.

* :func:`read_squad` reads the official JSON. In training mode an answer whose text does not
  occur at its ``answer_start`` in the context is *skipped and counted* (``SquadSet.skipped``
  names the question ids, and a warning is logged), never silently mislabelled.
* :func:`make_features` builds ``[CLS] question [SEP] context-window [SEP]`` windows as the
  original BERT does (``max_seq_length``, ``doc_stride``, ``max_query_length``) and records the
  character offsets of every context token, so a predicted span maps back to the exact
  substring of the original context. Tokenization is batched (each distinct context once).
* :func:`decode_predictions` runs the n-best span search with the max-context rule and, for
  v2.0, compares the null score ([CLS] start + end) with the best span's score.
* :func:`write_predictions` writes ``predictions.json`` (and ``null_odds.json``) atomically.
"""

import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
import tokenizers as hf_tokenizers

from input_pipeline import bpe_tokenizer, token_offsets
from input_pipeline import tokenizers as tok_lib
from util import atomic, paths
from util.errors import UserError

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class Answer:
    """One gold answer: its text and the character offset where it starts in the context."""

    text: str
    start: int


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """One question about one paragraph.

    Attributes:
      qid: the question id of the official file.
      question: the question text.
      context: the paragraph, unchanged.
      answers: gold answers (the first is the training target); empty when impossible.
      is_impossible: SQuAD v2.0 unanswerable question (False for v1.1).
      title: the article title.
    """

    qid: str
    question: str
    context: str
    answers: tuple[Answer, ...]
    is_impossible: bool
    title: str = ""


@dataclasses.dataclass(frozen=True)
class SquadSet:
    """What :func:`read_squad` returns.

    Attributes:
      examples: the questions, in file order.
      num_articles: number of articles (``data`` entries) in the file.
      version: the file's ``version`` field ("1.1", "v2.0", ...).
      skipped: qids left out because their answer text is not at ``answer_start``.
    """

    examples: list[SquadExample]
    num_articles: int
    version: str
    skipped: list[str]


@dataclasses.dataclass(frozen=True)
class SquadFeature:
    """One window of one example, padded to ``max_seq_length``.

    Attributes:
      example_index: index of the example in the list given to :func:`make_features`.
      window_index: 0 for the first window of the example, then 1, 2, ...
      input_ids, input_mask, segment_ids: int32 ``[max_seq_length]`` model inputs.
      offsets: int32 ``[max_seq_length, 2]``, the ``[start, end)`` character offsets in the
        context of each context token; -1 for [CLS], question, [SEP] and padding.
      token_is_max_context: bool ``[max_seq_length]``, True for a context token whose window
        gives it the most context of all windows holding it (only those start a span).
      start_position, end_position: training targets inside the window; 0/0 ([CLS]) when the
        answer is outside the window or the question is impossible.
    """

    example_index: int
    window_index: int
    input_ids: np.ndarray
    input_mask: np.ndarray
    segment_ids: np.ndarray
    offsets: np.ndarray
    token_is_max_context: np.ndarray
    start_position: int
    end_position: int


def _field(obj: object, key: str, path: pathlib.Path, where: str, kind: type) -> object:
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{path}: {where} has no field {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        raise UserError(f"{path}: {where}.{key} is {type(value).__name__}, not {kind.__name__}")
    return value


def read_squad(path: PathLike, *, is_training: bool) -> SquadSet:
    """Reads an official SQuAD v1.1 or v2.0 JSON file.

    Args:
      path: the JSON file.
      is_training: check every kept answer (training mode keeps only the first answer, which
        must occur at its ``answer_start``; a question whose answer does not is skipped and
        counted in ``SquadSet.skipped``). Evaluation mode keeps all answers unchecked.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not JSON, or a missing/mistyped field (the message names it).
    """
    path = paths.path(path)
    if not path.is_file():
        raise UserError(f"SQuAD file {path} does not exist (or is not a file)")
    try:
        with paths.open_text(path, "utf-8-sig") as f:  # a byte order mark is fine
            data = json.loads(f.read())
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # a lone "\ud800" escape fails here
    except (UnicodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path} is not a valid SQuAD JSON file: {e}") from e
    articles = _field(data, "data", path, "the top level", list)
    examples, skipped = [], []
    for a, article in enumerate(articles):
        title = str(article.get("title", "")) if isinstance(article, dict) else ""
        paragraphs = _field(article, "paragraphs", path, f"data[{a}]", list)
        for p, paragraph in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", path, where, str)
            for q, qa in enumerate(_field(paragraph, "qas", path, where, list)):
                qwhere = f"{where}.qas[{q}]"
                qid = _field(qa, "id", path, qwhere, str)
                question = _field(qa, "question", path, qwhere, str)
                impossible = bool(qa.get("is_impossible", False))
                answers = []
                listed = _field(qa, "answers", path, qwhere, list) if "answers" in qa else []
                for i, ans in enumerate([] if impossible else listed):
                    awhere = f"{qwhere}.answers[{i}] (id {qid})"
                    text = _field(ans, "text", path, awhere, str)
                    start = _field(ans, "answer_start", path, awhere, int)
                    answers.append(Answer(text, start))  # type: ignore[arg-type]
                if is_training and not impossible:
                    if not answers:
                        raise UserError(f"{path}: {qwhere} (id {qid}) has no answer")
                    first = answers[0]
                    if context[first.start : first.start + len(first.text)] != first.text:
                        skipped.append(qid)
                        continue
                    answers = answers[:1]
                examples.append(
                    SquadExample(qid, question, context, tuple(answers), impossible, title)
                )
    if skipped:
        logging.warning(
            "%s: %d question(s) skipped, their answer is not at answer_start (first: %s)",
            path,
            len(skipped),
            ", ".join(skipped[:5]),
        )
    return SquadSet(examples, len(articles), str(data.get("version", "")), skipped)


@dataclasses.dataclass(frozen=True)
class _Encoding:
    ids: list[int]
    offsets: list[tuple[int, int]]  # [start, end) character offsets in the text


class _SentencePieceOffsets:
    """A SentencePiece model behind the part of the ``tokenizers`` API used here: ids with
    character offsets (SentencePiece reports byte offsets into the original text)."""

    def __init__(self, tokenizer: tok_lib.SentencePieceTokenizer):
        self._tokenizer = tokenizer

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False):
        del add_special_tokens  # never added here
        encoded = token_offsets.encode_batch(self._tokenizer, texts)
        return [_Encoding(ids, offsets) for ids, offsets in encoded]

    encode_batch_fast = encode_batch


def _backend(
    tokenizer: tok_lib.Tokenizer | hf_tokenizers.Tokenizer,
) -> tuple[object, int, int, int]:
    """An encoder giving character offsets, and the [CLS], [SEP], [PAD] ids."""
    if isinstance(tokenizer, tok_lib.WordPieceTokenizer | bpe_tokenizer.BpeTokenizer):
        return tokenizer.backend, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
    if isinstance(tokenizer, tok_lib.SentencePieceTokenizer):
        backend = _SentencePieceOffsets(tokenizer)
    elif isinstance(tokenizer, hf_tokenizers.Tokenizer):
        backend = tokenizer
    else:
        raise TypeError(
            f"SQuAD features need a WordPiece or SentencePiece tokenizer, or a "
            f"tokenizers.Tokenizer (for character offsets), got {type(tokenizer).__name__}"
        )
    ids = [backend.token_to_id(t) for t in (tok_lib.CLS, tok_lib.SEP, tok_lib.PAD)]
    if None in ids:
        raise UserError("the tokenizer lacks one of [CLS] [SEP] [PAD]")
    return backend, ids[0], ids[1], ids[2]


def _windows(num_tokens: int, max_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of each window over ``num_tokens`` context tokens, as in BERT."""
    spans, start = [], 0
    while True:
        length = min(num_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length >= num_tokens:
            return spans
        start += min(length, doc_stride)


def _max_context(spans: Sequence[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """``[windows, num_tokens]`` bool: token t scores best in window w (first wins a tie).

    The score of a token in a window is min(left context, right context) + 0.01 * length.
    """
    starts = np.array([s for s, _ in spans])[:, None]  # [windows, 1]
    lengths = np.array([n for _, n in spans])[:, None]
    pos = np.arange(num_tokens)[None, :]  # [1, num_tokens]
    left, right = pos - starts, starts + lengths - 1 - pos
    score = np.minimum(left, right) + 0.01 * lengths
    score = np.where((left >= 0) & (right >= 0), score, -np.inf)  # [windows, num_tokens]
    best = np.argmax(score, axis=0)  # [num_tokens]
    return best[None, :] == np.arange(len(spans))[:, None]


def _answer_tokens(offsets: np.ndarray, answer: Answer) -> tuple[int, int] | None:
    """First and last context token overlapping the answer's characters, or None."""
    begin, end = answer.start, answer.start + len(answer.text)
    inside = np.nonzero((offsets[:, 1] > begin) & (offsets[:, 0] < end))[0]
    if inside.size == 0:
        return None
    return int(inside[0]), int(inside[-1])


@dataclasses.dataclass(frozen=True)
class _Window:
    example: int  # the example's index
    number: int  # the window's number within the example
    start: int  # its first context token
    length: int  # its context tokens
    is_max: np.ndarray  # [context tokens] bool: the window is the token's max-context one


def _window_feature(
    window: _Window,
    query: np.ndarray,
    ids: np.ndarray,
    offsets: np.ndarray,
    target: tuple[int, int] | None,
    special: Sequence[int],
    max_seq_length: int,
) -> SquadFeature:
    """``[CLS] query [SEP] context window [SEP]`` padded, with offsets and the span target."""
    cls_id, sep_id, pad_id = special
    start, length = window.start, window.length
    shift = len(query) + 2  # position of the first context token in a window
    input_ids = np.full(max_seq_length, pad_id, np.int32)
    input_ids[0] = cls_id
    input_ids[1 : shift - 1] = query
    input_ids[shift - 1] = sep_id
    input_ids[shift : shift + length] = ids[start : start + length]
    input_ids[shift + length] = sep_id
    used = shift + length + 1
    input_mask = (np.arange(max_seq_length) < used).astype(np.int32)
    segment_ids = ((np.arange(max_seq_length) >= shift) & (input_mask > 0)).astype(np.int32)
    window_offsets = np.full((max_seq_length, 2), -1, np.int32)
    window_offsets[shift : shift + length] = offsets[start : start + length]
    token_is_max = np.zeros(max_seq_length, bool)
    token_is_max[shift : shift + length] = window.is_max[start : start + length]
    start_pos = end_pos = 0
    if target is not None and start <= target[0] and target[1] < start + length:
        start_pos, end_pos = target[0] - start + shift, target[1] - start + shift
    return SquadFeature(window.example, window.number, input_ids, input_mask, segment_ids,
                        window_offsets, token_is_max, start_pos, end_pos)  # fmt: skip


def make_features(
    examples: Sequence[SquadExample],
    tokenizer: tok_lib.Tokenizer | hf_tokenizers.Tokenizer,
    *,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    is_training: bool,
) -> list[SquadFeature]:
    """Sliding-window features of ``examples`` (every window is kept, in example order).

    Args:
      examples: from :func:`read_squad`.
      tokenizer: the checkpoint's WordPiece, BPE (tokenizer.json) or SentencePiece tokenizer
        (all give character offsets), or a ``tokenizers.Tokenizer`` directly.
      max_seq_length: tokens per window, special tokens included (384 in BERT).
      doc_stride: how far each window moves over the context (128).
      max_query_length: questions are cut to this many tokens (64).
      is_training: compute start/end targets from each example's first answer.

    Returns:
      The features; without targets (``is_training=False``) the positions are 0/0.
    """
    if max_query_length + 3 >= max_seq_length:
        raise UserError(
            f"max_seq_length={max_seq_length} leaves no room for context after "
            f"max_query_length={max_query_length} and 3 special tokens"
        )
    if doc_stride <= 0:
        raise UserError(f"doc_stride must be positive, got {doc_stride}")
    backend, *special = _backend(tokenizer)  # special: [CLS], [SEP], [PAD] ids
    contexts = list(dict.fromkeys(e.context for e in examples))
    context_index = {c: i for i, c in enumerate(contexts)}
    encoded = backend.encode_batch(contexts, add_special_tokens=False)
    context_ids = [np.asarray(e.ids, np.int32) for e in encoded]
    context_offsets = [np.asarray(e.offsets, np.int32).reshape(-1, 2) for e in encoded]
    questions = backend.encode_batch_fast([e.question for e in examples], add_special_tokens=False)

    features = []
    unlocated = 0
    for index, example in enumerate(examples):
        query = np.asarray(questions[index].ids[:max_query_length], np.int32)
        c = context_index[example.context]
        ids, offsets = context_ids[c], context_offsets[c]
        max_tokens = max_seq_length - len(query) - 3
        spans = _windows(len(ids), max_tokens, doc_stride)
        is_max = _max_context(spans, len(ids))  # [windows, context tokens]
        target = None
        if is_training and not example.is_impossible and example.answers:
            target = _answer_tokens(offsets, example.answers[0])
            unlocated += target is None
        for w, (start, length) in enumerate(spans):
            window = _Window(index, w, start, length, is_max[w])
            features.append(_window_feature(window, query, ids, offsets, target, special,
                                            max_seq_length))  # fmt: skip
    if unlocated:
        logging.warning("%d answer(s) cover no context token; their targets are 0/0", unlocated)
    return features


def features_to_arrays(features: Sequence[SquadFeature]) -> dict[str, np.ndarray]:
    """Stacks features into model-ready arrays (``[num_features, max_seq_length]`` each).

    Returns:
      input_ids, input_mask, segment_ids (int32), start_positions, end_positions
      (int32 ``[num_features]``) and example_index (int32 ``[num_features]``).
    """
    return {
        "input_ids": np.stack([f.input_ids for f in features]),
        "input_mask": np.stack([f.input_mask for f in features]),
        "segment_ids": np.stack([f.segment_ids for f in features]),
        "start_positions": np.array([f.start_position for f in features], np.int32),
        "end_positions": np.array([f.end_position for f in features], np.int32),
        "example_index": np.array([f.example_index for f in features], np.int32),
    }


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One scored span: its text in the original context, start + end logit, and where the
    text starts in the context (a character offset)."""

    text: str
    score: float
    start: int = 0


def _feature_candidates(
    feature: SquadFeature,
    context: str,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int,
    max_answer_length: int,
) -> list[Candidate]:
    """Valid spans from the n-best start and end positions of one feature."""
    starts = np.argsort(-start_logits, kind="stable")[:n_best_size]
    ends = np.argsort(-end_logits, kind="stable")[:n_best_size]
    offsets, is_max = feature.offsets, feature.token_is_max_context
    starts = starts[(offsets[starts, 0] >= 0) & is_max[starts]]  # only context tokens
    ends = ends[offsets[ends, 0] >= 0]
    s, e = np.meshgrid(starts, ends, indexing="ij")  # [starts, ends]
    keep = (e >= s) & (e - s + 1 <= max_answer_length)
    s, e = s[keep], e[keep]
    scores = start_logits[s] + end_logits[e]
    return [
        Candidate(context[offsets[i, 0] : offsets[j, 1]], float(score), int(offsets[i, 0]))
        for i, j, score in zip(s, e, scores, strict=True)
    ]


def decode_predictions(
    examples: Sequence[SquadExample],
    features: Sequence[SquadFeature],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best_size: int,
    max_answer_length: int,
    version_2_with_negative: bool,
    null_score_diff_threshold: float,
) -> tuple[dict[str, str], dict[str, float], dict[str, list[Candidate]]]:
    """Best answer text of every example from per-feature logits.

    Args:
      examples, features: as given to and returned by :func:`make_features`.
      start_logits, end_logits: float ``[num_features, max_seq_length]``.
      n_best_size: start and end positions tried per feature (20).
      max_answer_length: longest span, in tokens (30).
      version_2_with_negative: SQuAD v2.0: predict "" when the null score wins.
      null_score_diff_threshold: predict "" when (null score - best span score) exceeds it.

    Returns:
      (predictions {qid: text}, null_odds {qid: null score - best span score} (v2.0 only,
      else empty), n-best {qid: candidates, best first, distinct texts, at most n_best_size}).
    """
    start_logits = np.asarray(start_logits, np.float32)
    end_logits = np.asarray(end_logits, np.float32)
    if start_logits.shape != end_logits.shape or len(start_logits) != len(features):
        raise ValueError(
            f"logits {start_logits.shape} / {end_logits.shape} do not match "
            f"{len(features)} features"
        )
    by_example: dict[int, list[int]] = {}
    for i, feature in enumerate(features):
        by_example.setdefault(feature.example_index, []).append(i)
    predictions, null_odds, nbest = {}, {}, {}
    for index, example in enumerate(examples):
        candidates, null_score = [], np.inf
        for i in by_example.get(index, []):
            null_score = min(null_score, float(start_logits[i, 0] + end_logits[i, 0]))
            candidates += _feature_candidates(
                features[i],
                example.context,
                start_logits[i],
                end_logits[i],
                n_best_size,
                max_answer_length,
            )
        candidates.sort(key=lambda c: -c.score)
        seen, best = set(), []
        for candidate in candidates:
            if candidate.text not in seen and len(best) < n_best_size:
                seen.add(candidate.text)
                best.append(candidate)
        nbest[example.qid] = best
        text = best[0].text if best else ""
        if version_2_with_negative:
            diff = null_score - (best[0].score if best else -np.inf)
            null_odds[example.qid] = float(diff)
            if diff > null_score_diff_threshold:
                text = ""
        predictions[example.qid] = text
    return predictions, null_odds, nbest


def _json(mapping: Mapping) -> str:
    return json.dumps(dict(mapping), ensure_ascii=False, indent=2)


def write_predictions(
    output_dir: PathLike,
    predictions: Mapping[str, str],
    null_odds: Mapping[str, float] | None = None,
) -> list[pathlib.Path]:
    """Writes ``predictions.json`` ({qid: text}) and, if given, ``null_odds.json``.

    Each file is written under a temporary name and renamed, so none is ever half-written.

    Returns:
      The paths written.
    """
    output_dir = paths.path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [output_dir / "predictions.json"]
    atomic.write_atomically(written[0], _json(predictions))
    if null_odds is not None:
        written.append(output_dir / "null_odds.json")
        atomic.write_atomically(written[1], _json(null_odds))
    return written
