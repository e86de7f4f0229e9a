"""Evaluation metrics for fine-tuning: GLUE classification and regression, SQuAD v1.1/v2.0,
and CoNLL-2003 entity-level scores.

Pure Python and numpy on host values (no JAX): a fine-tuning loop gathers predictions and
labels, then calls these once per evaluation. Classification and correlation metrics return
fractions in [0, 1] (or [-1, 1]); SQuAD scores are in percent, as the official script prints them;
CoNLL scores are fractions (conlleval prints the same numbers times 100).
"""

import collections
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------
# Classification (GLUE)
# --------------------------------------------------------------------------------------------


def _paired(predictions: Any, references: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D numpy arrays of equal, non-zero length."""
    preds = np.asarray(predictions).reshape(-1)
    refs = np.asarray(references).reshape(-1)
    if preds.shape != refs.shape:
        raise ValueError(f"{preds.size} predictions but {refs.size} references")
    if preds.size == 0:
        raise ValueError("no predictions to score")
    return preds, refs


def accuracy(predictions: Any, references: Any) -> float:
    """Fraction of predictions equal to their reference label."""
    preds, refs = _paired(predictions, references)
    return float(np.mean(preds == refs))


def _f1_from_counts(tp: int, fp: int, fn: int) -> float:
    """F1 = 2tp / (2tp + fp + fn); 0.0 when the class never occurs (sklearn's zero_division)."""
    denominator = 2 * tp + fp + fn
    return 2.0 * tp / denominator if denominator else 0.0


def f1_binary(predictions: Any, references: Any, positive_label: int = 1) -> float:
    """F1 of the positive class, as GLUE reports for MRPC and QQP.

    Returns 0.0 when neither predictions nor references contain the positive class (sklearn's
    default `zero_division` result).
    """
    preds, refs = _paired(predictions, references)
    pred_pos = preds == positive_label
    ref_pos = refs == positive_label
    tp = int(np.sum(pred_pos & ref_pos))
    fp = int(np.sum(pred_pos & ~ref_pos))
    fn = int(np.sum(~pred_pos & ref_pos))
    return _f1_from_counts(tp, fp, fn)


def f1_macro(predictions: Any, references: Any) -> float:
    """Unweighted mean of per-class F1 over every label seen in predictions or references."""
    preds, refs = _paired(predictions, references)
    scores = []
    for label in np.union1d(preds, refs):
        pred_is = preds == label
        ref_is = refs == label
        tp = int(np.sum(pred_is & ref_is))
        scores.append(_f1_from_counts(tp, int(np.sum(pred_is)) - tp, int(np.sum(ref_is)) - tp))
    return float(np.mean(scores))


def matthews_corrcoef(predictions: Any, references: Any) -> float:
    """Matthews correlation coefficient (CoLA), in its multi-class form (Gorodkin 2004).

    Returns 0.0 when it is undefined, i.e. when all predictions or all references are one class
    (sklearn returns the same).
    """
    preds, refs = _paired(predictions, references)
    labels, inverse = np.unique(np.concatenate([refs, preds]), return_inverse=True)
    ref_ids, pred_ids = inverse[: refs.size], inverse[refs.size :]
    confusion = np.zeros((labels.size, labels.size), dtype=np.float64)  # [true, predicted]
    np.add.at(confusion, (ref_ids, pred_ids), 1.0)
    true_counts = confusion.sum(axis=1)  # [classes]
    pred_counts = confusion.sum(axis=0)  # [classes]
    correct = np.trace(confusion)
    total = float(refs.size)
    cov_true_pred = correct * total - true_counts @ pred_counts
    cov_pred_pred = total * total - pred_counts @ pred_counts
    cov_true_true = total * total - true_counts @ true_counts
    if cov_pred_pred * cov_true_true == 0:
        return 0.0
    return float(cov_true_pred / np.sqrt(cov_pred_pred * cov_true_true))


# --------------------------------------------------------------------------------------------
# Correlation (STS-B)
# --------------------------------------------------------------------------------------------


def pearson(predictions: Any, references: Any) -> float:
    """Pearson correlation coefficient.

    Returns nan when either input is constant (the coefficient is undefined; scipy's pearsonr
    returns nan too). Raises ValueError for fewer than two pairs.
    """
    x, y = _paired(predictions, references)
    if x.size < 2:
        raise ValueError("Pearson correlation needs at least two pairs")
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    dx = x - x.mean()
    dy = y - y.mean()
    norm = np.linalg.norm(dx) * np.linalg.norm(dy)
    if norm == 0 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(np.clip(np.dot(dx, dy) / norm, -1.0, 1.0))


def average_ranks(values: Any) -> np.ndarray:
    """Ranks from 1 to n, ties sharing the mean of the ranks they span (like scipy's rankdata)."""
    x = np.asarray(values).reshape(-1)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # Group boundaries: starts of runs of equal values in the sorted array.
    is_start = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    starts = np.flatnonzero(is_start)
    ends = np.concatenate([starts[1:], [x.size]])  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def spearman(predictions: Any, references: Any) -> float:
    """Spearman rank correlation: Pearson on average ranks (ties share their mean rank).

    Returns nan when either input is constant, as scipy's spearmanr does.
    """
    x, y = _paired(predictions, references)
    return pearson(average_ranks(x), average_ranks(y))


# Metric names as task definitions use them (GLUE's "f1" is the positive-class F1).
BY_NAME = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "f1_macro": f1_macro,
    "matthews_corrcoef": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(names: Sequence[str], predictions: Any, references: Any) -> dict[str, float]:
    """{name: value} for each metric named in BY_NAME; raises ValueError for an unknown name."""
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(BY_NAME)}")
    return {name: BY_NAME[name](predictions, references) for name in names}


# --------------------------------------------------------------------------------------------
# SQuAD v1.1 / v2.0
# --------------------------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD answer normalisation: lower-case, drop ASCII punctuation, drop the articles
    a/an/the as whole words, and collapse runs of whitespace to single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 between normalised answers.

    An empty answer (after normalisation) scores 1.0 against another empty answer and 0.0
    against anything else (SQuAD v2.0's rule for unanswerable questions).
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    overlap = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(overlap.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_max_over_gold(prediction: str, gold_answers: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1) of one prediction: the best over its gold answers.

    Gold answers that normalise to nothing are dropped; with none left the question is
    unanswerable and only an empty prediction scores (1.0, 1.0).
    """
    golds = [g for g in gold_answers if normalize_answer(g)] or [""]
    exact = max(squad_exact_match(prediction, g) for g in golds)
    f1 = max(squad_f1(prediction, g) for g in golds)
    return exact, f1


def _squad_questions(dataset_json: Mapping[str, Any] | Sequence[Any]) -> Iterable[tuple[str, list]]:
    """(question id, gold answer texts) for every question of a SQuAD JSON object."""
    articles = dataset_json["data"] if isinstance(dataset_json, Mapping) else dataset_json
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", ())):
            for qa in paragraph.get("qas", ()):
                if "id" not in qa:
                    raise ValueError(f"SQuAD data: article {a}, paragraph {p}: question has no id")
                if qa.get("is_impossible", False):
                    yield qa["id"], []
                else:
                    yield qa["id"], [answer["text"] for answer in qa.get("answers", ())]


def squad_scores(
    predictions: Mapping[str, str], dataset_json: Mapping[str, Any] | Sequence[Any]
) -> dict[str, float]:
    """The official SQuAD evaluation: exact match and F1 in percent over all questions.

    Args:
      predictions: question id -> predicted answer text ("" means "no answer" for v2.0).
      dataset_json: the parsed dev-set JSON ({"version": ..., "data": [...]}) or its "data" list.

    Returns:
      {"exact_match", "f1", "total"}; when the data has unanswerable questions (v2.0) also
      "HasAns_exact_match", "HasAns_f1", "HasAns_total" and the same three for "NoAns" (each
      pair present only when its group is non-empty). A question with no prediction scores 0
      (the v1.1 script's rule; v2.0's script would skip it).
    """
    exact: dict[str, list[float]] = {"all": [], "HasAns": [], "NoAns": []}
    f1: dict[str, list[float]] = {"all": [], "HasAns": [], "NoAns": []}
    for qid, gold_answers in _squad_questions(dataset_json):
        if qid in predictions:
            em_q, f1_q = squad_max_over_gold(predictions[qid], gold_answers)
        else:
            em_q, f1_q = 0.0, 0.0
        group = "HasAns" if any(normalize_answer(g) for g in gold_answers) else "NoAns"
        for name in ("all", group):
            exact[name].append(em_q)
            f1[name].append(f1_q)
    if not exact["all"]:
        raise ValueError("SQuAD data has no questions")
    result = {
        "exact_match": 100.0 * float(np.mean(exact["all"])),
        "f1": 100.0 * float(np.mean(f1["all"])),
        "total": float(len(exact["all"])),
    }
    if exact["NoAns"]:
        for group in ("HasAns", "NoAns"):
            if exact[group]:
                result[f"{group}_exact_match"] = 100.0 * float(np.mean(exact[group]))
                result[f"{group}_f1"] = 100.0 * float(np.mean(f1[group]))
                result[f"{group}_total"] = float(len(exact[group]))
    return result


def squad_best_null_threshold(
    span_texts: Mapping[str, str],
    null_odds: Mapping[str, float],
    dataset_json: Mapping[str, Any] | Sequence[Any],
) -> dict[str, float]:
    """SQuAD v2.0: the `null_score_diff_threshold` that would have scored best on this data.

    With threshold t a question is answered "" when its null odds exceed t, else with its best
    span. Every distinct odds value is tried as t, and one below them all (always "").

    Args:
      span_texts: qid -> the best non-null span (what is answered when the odds are <= t).
      null_odds: qid -> null score - best span score (as decode_predictions gives).
      dataset_json: the gold data; only its questions present in `null_odds` are counted.

    Returns:
      {"best_exact_match", "best_exact_match_threshold", "best_f1", "best_f1_threshold"}, the
      scores in percent.
    """
    questions = [(q, gold) for q, gold in _squad_questions(dataset_json) if q in null_odds]
    if not questions:
        raise ValueError("none of the questions has null odds")
    order = sorted(questions, key=lambda item: null_odds[item[0]])
    result = {}
    for name, index in (("exact_match", 0), ("f1", 1)):
        # Below every odds value, every question is answered "".
        total = sum(squad_max_over_gold("", gold)[index] for _, gold in questions)
        best, best_threshold = total, null_odds[order[0][0]] - 1.0
        for i, (qid, gold) in enumerate(order):
            # Past this question's odds it gets its span instead of "".
            total += squad_max_over_gold(span_texts[qid], gold)[index]
            total -= squad_max_over_gold("", gold)[index]
            tied = i + 1 < len(order) and null_odds[order[i + 1][0]] == null_odds[qid]
            if not tied and total > best:
                best, best_threshold = total, null_odds[qid]
        result[f"best_{name}"] = 100.0 * best / len(questions)
        result[f"best_{name}_threshold"] = float(best_threshold)
    return result


# --------------------------------------------------------------------------------------------
# CoNLL-2003 entity-level scores (conlleval rules)
# --------------------------------------------------------------------------------------------

Chunk = tuple[str, int, int]  # (entity type, start token, end token exclusive)


def _split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''). Prefixes B, I, E, S (IOBES) and O."""
    if tag == "O":
        return "O", ""
    prefix, sep, entity_type = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S") or not entity_type:
        raise ValueError(f"bad tag {tag!r}: expected 'O' or B-/I-/E-/S- followed by a type")
    return prefix, entity_type


def _chunk_ends(prev: str, prev_type: str, tag: str, entity_type: str) -> bool:
    """Whether a chunk open at the previous token closes before this one (conlleval)."""
    if prev == "O":
        return False
    if prev in ("E", "S"):
        return True
    if tag in ("B", "S", "O"):
        return True
    return prev_type != entity_type


def _chunk_starts(prev: str, prev_type: str, tag: str, entity_type: str) -> bool:
    """Whether a new chunk begins at this token (conlleval)."""
    if tag == "O":
        return False
    if tag in ("B", "S"):
        return True
    if prev in ("O", "E", "S"):
        return True
    return prev_type != entity_type


def get_chunks(tags: Sequence[str]) -> list[Chunk]:
    """Entities in one sentence's tags, as (type, start, end-exclusive), in order.

    Follows conlleval, so IOB2, IOB1 and IOBES all work: an I- tag after O, after the end of a
    chunk, or after a tag of a different type starts a new chunk; B- always starts one.
    """
    chunks: list[Chunk] = []
    prev, prev_type, start = "O", "", -1
    for i, tag in enumerate(tags):
        prefix, entity_type = _split_tag(tag)
        if start >= 0 and _chunk_ends(prev, prev_type, prefix, entity_type):
            chunks.append((prev_type, start, i))
            start = -1
        if _chunk_starts(prev, prev_type, prefix, entity_type):
            start = i
        prev, prev_type = prefix, entity_type
    if start >= 0:
        chunks.append((prev_type, start, len(tags)))
    return chunks


def _as_sentences(tags: Sequence[Sequence[str]] | Sequence[str]) -> list[Sequence[str]]:
    """A flat tag list is one sentence; a list of lists is one sentence each."""
    if len(tags) and isinstance(tags[0], str):
        return [tags]  # type: ignore[list-item]
    return list(tags)  # type: ignore[arg-type]


def _chunk_counts(
    predictions: Sequence[Sequence[str]] | Sequence[str],
    references: Sequence[Sequence[str]] | Sequence[str],
) -> tuple[collections.Counter, collections.Counter, collections.Counter, int, int]:
    """Per-type counts of (correct, predicted, gold) chunks, and (correct, total) tokens."""
    pred_sents, ref_sents = _as_sentences(predictions), _as_sentences(references)
    if len(pred_sents) != len(ref_sents):
        raise ValueError(f"{len(pred_sents)} predicted sentences but {len(ref_sents)} references")
    correct: collections.Counter = collections.Counter()
    found: collections.Counter = collections.Counter()
    gold: collections.Counter = collections.Counter()
    correct_tokens = total_tokens = 0
    for s, (pred_tags, ref_tags) in enumerate(zip(pred_sents, ref_sents, strict=True)):
        if len(pred_tags) != len(ref_tags):
            raise ValueError(
                f"sentence {s}: {len(pred_tags)} predicted tags but {len(ref_tags)} references"
            )
        pred_chunks = get_chunks(pred_tags)
        ref_chunks = get_chunks(ref_tags)
        found.update(c[0] for c in pred_chunks)
        gold.update(c[0] for c in ref_chunks)
        correct.update(c[0] for c in set(pred_chunks) & set(ref_chunks))
        correct_tokens += sum(p == r for p, r in zip(pred_tags, ref_tags, strict=True))
        total_tokens += len(ref_tags)
    return correct, found, gold, correct_tokens, total_tokens


def _prf(correct: int, found: int, gold: int) -> dict[str, float]:
    """Precision, recall, F1 (0.0 where a denominator is zero, as conlleval prints)."""
    precision = correct / found if found else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def conll_scores(
    predictions: Sequence[Sequence[str]] | Sequence[str],
    references: Sequence[Sequence[str]] | Sequence[str],
) -> dict[str, float]:
    """Entity-level precision, recall and F1 over all types, plus token accuracy (conlleval).

    A predicted entity counts as correct only when its type, start and end all match a gold
    entity. Chunks never cross sentence boundaries.

    Args:
      predictions: predicted tags, one list per sentence (or one flat list for one sentence).
      references: gold tags in the same shape.

    Returns:
      {"precision", "recall", "f1", "accuracy"} as fractions (conlleval prints them x100).
    """
    correct, found, gold, correct_tokens, total_tokens = _chunk_counts(predictions, references)
    result = _prf(sum(correct.values()), sum(found.values()), sum(gold.values()))
    result["accuracy"] = correct_tokens / total_tokens if total_tokens else 0.0
    return result


def conll_scores_per_type(
    predictions: Sequence[Sequence[str]] | Sequence[str],
    references: Sequence[Sequence[str]] | Sequence[str],
) -> dict[str, dict[str, float]]:
    """Entity-level scores per entity type (every type predicted or in the gold data).

    Returns:
      type -> {"precision", "recall", "f1", "found", "gold"} (fractions and chunk counts).
    """
    correct, found, gold, _, _ = _chunk_counts(predictions, references)
    result = {}
    for entity_type in sorted(set(found) | set(gold)):
        scores = _prf(correct[entity_type], found[entity_type], gold[entity_type])
        scores["found"] = float(found[entity_type])
        scores["gold"] = float(gold[entity_type])
        result[entity_type] = scores
    return result
