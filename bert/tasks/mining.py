"""Hard negatives for (anchor, positive) pairs, chosen as sentence-transformers'
`mine_hard_negatives` chooses them (its rules, step by step, on embeddings the caller computes):

1. the anchors are deduplicated (first appearance kept), the corpus is the given corpus (or the
   positives) with every positive added, deduplicated the same way;
2. every anchor's `range_max + most positives of one anchor` best corpus texts by cosine
   similarity are its candidates (missing ones count as -inf);
3. its own positives leave the candidates; so do candidates within `absolute_margin` of the
   anchor's hardest positive (lowest score), above `(1 - relative_margin)` of it (as
   `positive - |positive| * relative_margin`), above `max_score` or below `min_score`;
4. the `range_max` best left, the first `range_min` of them skipped, give `num_negatives`
   negatives: the best ones ("top"), or a seeded sample of those left ("random", sorted back
   by score; not the same draws as sentence-transformers', which uses Python's global random);
5. "triplet" output: one (anchor, positive, negative) row per negative found, anchors in their
   order, each of its positives in order, negatives best first; "n-tuple": one row per
   (anchor, positive) with all `num_negatives` negatives, rows short of them dropped.
"""

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from util.errors import UserError

FORMATS = ("triplet", "n-tuple")
SAMPLINGS = ("top", "random")
# (queries [n, d], corpus [m, d], k) -> (scores [n, <=k], indices [n, <=k]), best first
Search = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Controls:
    """sentence-transformers' mining controls, with its defaults (`range_max` None: derived from
    the other controls as it derives it)."""

    range_min: int = 0
    range_max: int | None = None
    max_score: float | None = None
    min_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    num_negatives: int = 3
    sampling: str = "top"
    output_format: str = "triplet"
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Texts:
    """The deduplicated anchors ("queries") and corpus, and each query's positives."""

    queries: list[str]
    corpus: list[str]
    positives: list[list[int]]  # per query, corpus indices in order of first appearance


def texts(anchors: Sequence[str], positives: Sequence[str], corpus: Sequence[str] = ()) -> Texts:
    """Step 1 (see the module's docstring)."""
    documents = list(dict.fromkeys([*(corpus or positives), *positives]))
    position = {text: i for i, text in enumerate(documents)}
    queries = list(dict.fromkeys(anchors))
    query = {text: i for i, text in enumerate(queries)}
    own: list[list[int]] = [[] for _ in queries]
    for anchor, positive in zip(anchors, positives, strict=True):
        if position[positive] not in own[query[anchor]]:
            own[query[anchor]].append(position[positive])
    return Texts(queries, documents, own)


def _range_max(controls: Controls, most_positives: int) -> int:
    c = controls
    if c.range_max is not None:
        top = c.range_max
    elif c.absolute_margin is not None or c.relative_margin is not None or c.max_score is not None:
        top = c.range_min + 10 * c.num_negatives + most_positives  # some will be skipped
    else:
        top = c.range_min + c.num_negatives + most_positives
    if c.num_negatives < 1:
        raise UserError(f"--num_negatives={c.num_negatives} must be at least 1")
    if c.range_min < 0 or c.range_min >= top:
        raise UserError(f"--range_min={c.range_min} must lie in 0..range_max={top} (exclusive)")
    if c.num_negatives > top - c.range_min:
        raise UserError(
            f"cannot mine {c.num_negatives} negatives from ranks {c.range_min} "
            f"to {top}: raise --range_max, or lower --range_min or --num_negatives"
        )
    if c.sampling not in SAMPLINGS or c.output_format not in FORMATS:
        raise UserError(f"--sampling must be one of {SAMPLINGS}, --output_format one of {FORMATS}")
    return top


def _filtered(scores, indices, data: Texts, positive_scores, controls: Controls) -> np.ndarray:
    """Step 3: `scores` with the candidates left out set to -inf."""
    c = controls
    scores = np.where(indices < 0, -np.inf, scores)
    own = np.array([np.isin(row, data.positives[q]) for q, row in enumerate(indices)])
    scores = np.where(own, -np.inf, scores)
    hardest = np.array([min(s) for s in positive_scores])[:, None]  # [queries, 1]
    if c.absolute_margin is not None:
        scores = np.where(scores + c.absolute_margin > hardest, -np.inf, scores)
    if c.relative_margin is not None:
        scores = np.where(scores > hardest - np.abs(hardest) * c.relative_margin, -np.inf, scores)
    if c.max_score is not None:
        scores = np.where(scores > c.max_score, -np.inf, scores)
    if c.min_score is not None:
        scores = np.where(scores < c.min_score, -np.inf, scores)
    return scores


def _chosen(scores, indices, top: int, controls: Controls) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: [queries, num_negatives] scores and corpus indices, best first."""
    c = controls
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top][:, c.range_min :]
    scores = np.take_along_axis(scores, order, 1)
    indices = np.take_along_axis(indices, order, 1)
    if c.sampling == "top":
        return scores[:, : c.num_negatives], indices[:, : c.num_negatives]
    rng = np.random.default_rng(c.seed)
    options = np.maximum(np.isfinite(scores).sum(axis=1), c.num_negatives)
    picked = np.stack([np.sort(rng.choice(n, c.num_negatives, replace=False)) for n in options])
    return np.take_along_axis(scores, picked, 1), np.take_along_axis(indices, picked, 1)


def mine(
    anchors: Sequence[str],
    positives: Sequence[str],
    embed: Callable[[list[str]], np.ndarray],
    search: Search,
    controls: Controls = Controls(),
    corpus: Sequence[str] = (),
) -> list[dict[str, str]]:
    """The mined rows: {"anchor", "positive", "negative"} (triplet) or {"anchor", "positive",
    "negative_1", ...} (n-tuple), as the module's docstring describes.

    Args:
      embed: texts -> L2-normalised embeddings [texts, dims].
      search: the top-k by cosine similarity (bert/tasks/retrieval.py's search).
      corpus: the texts to draw negatives from besides the positives; empty: the positives.
    """
    data = texts(anchors, positives, corpus)
    most = max(len(p) for p in data.positives)
    top = _range_max(controls, most)
    queries, documents = embed(data.queries), embed(data.corpus)
    want = top + most
    scores, indices = search(queries, documents, min(want, len(data.corpus)))
    missing = want - scores.shape[1]
    scores = np.pad(scores.astype(np.float64), ((0, 0), (0, missing)), constant_values=-np.inf)
    indices = np.pad(indices.astype(np.int64), ((0, 0), (0, missing)), constant_values=-1)
    positive_scores = [[float(queries[q] @ documents[p]) for p in own]
                       for q, own in enumerate(data.positives)]  # fmt: skip
    scores = _filtered(scores, indices, data, positive_scores, controls)
    scores, indices = _chosen(scores, indices, top, controls)
    rows = []
    for q, own in enumerate(data.positives):
        found = [data.corpus[i] for s, i in zip(scores[q], indices[q], strict=True)
                 if np.isfinite(s)]  # fmt: skip
        for p in own:
            pair = {"anchor": data.queries[q], "positive": data.corpus[p]}
            if controls.output_format == "triplet":
                rows += [{**pair, "negative": n} for n in found]
            elif len(found) == controls.num_negatives:
                rows.append(pair | {f"negative_{i}": n for i, n in enumerate(found, start=1)})
    return rows
