"""Fine-tuning metrics against references: sklearn and scipy for classification and correlation,
hand-worked SQuAD and CoNLL cases, and an independent chunker on random tag sequences."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from bert.tasks import metrics

# --------------------------------------------------------------------------------------------
# Classification against sklearn
# --------------------------------------------------------------------------------------------


def _label_sets() -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed random binary and multi-class predictions, plus small hand-picked ones."""
    rng = np.random.default_rng(0)
    cases = []
    for n, classes in [(50, 2), (200, 2), (101, 3), (300, 5)]:
        refs = rng.integers(0, classes, n)
        # Mostly right, so scores are far from chance and distinct from each other.
        preds = np.where(rng.random(n) < 0.7, refs, rng.integers(0, classes, n))
        cases.append((preds, refs))
    cases.append((np.array([1, 0, 1, 1]), np.array([1, 1, 0, 1])))
    cases.append((np.array([0, 0, 1, 0]), np.array([1, 1, 0, 1])))  # all wrong
    return cases


@pytest.mark.parametrize("case", range(6))
def test_classification_metrics_equal_sklearn(case: int) -> None:
    preds, refs = _label_sets()[case]
    assert metrics.accuracy(preds, refs) == pytest.approx(skm.accuracy_score(refs, preds))
    assert metrics.f1_macro(preds, refs) == pytest.approx(
        skm.f1_score(refs, preds, average="macro")
    )
    assert metrics.matthews_corrcoef(preds, refs) == pytest.approx(
        skm.matthews_corrcoef(refs, preds)
    )
    if refs.max() <= 1:
        assert metrics.f1_binary(preds, refs) == pytest.approx(skm.f1_score(refs, preds))


def test_hand_worked_binary_values() -> None:
    preds = [1, 1, 1, 0, 0, 0]
    refs = [1, 1, 0, 1, 0, 0]  # tp=2 fp=1 fn=1 tn=2
    assert metrics.accuracy(preds, refs) == pytest.approx(4 / 6)
    assert metrics.f1_binary(preds, refs) == pytest.approx(2 / 3)
    assert metrics.f1_binary(preds, refs, positive_label=0) == pytest.approx(2 / 3)
    assert metrics.matthews_corrcoef(preds, refs) == pytest.approx((4 - 1) / 9)


def test_macro_f1_counts_labels_only_in_predictions() -> None:
    preds = np.array([0, 1, 2, 2])
    refs = np.array([0, 1, 1, 1])  # class 2 never occurs in the references: its F1 is 0
    assert metrics.f1_macro(preds, refs) == pytest.approx(
        skm.f1_score(refs, preds, average="macro")
    )
    assert metrics.f1_macro(preds, refs) == pytest.approx((1 + 0.5 + 0) / 3)


@pytest.mark.parametrize(
    "preds, refs",
    [
        ([1, 1, 1, 1], [0, 1, 0, 1]),  # all predictions one class
        ([0, 0, 0, 0], [0, 1, 0, 1]),
        ([0, 1, 0, 1], [1, 1, 1, 1]),  # all references one class
        ([1, 1, 1], [1, 1, 1]),  # everything one class
    ],
)
def test_matthews_degenerate_is_zero_like_sklearn(preds: list[int], refs: list[int]) -> None:
    assert metrics.matthews_corrcoef(preds, refs) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when only one label is seen
        assert skm.matthews_corrcoef(refs, preds) == 0.0


def test_binary_f1_without_positives_is_zero_like_sklearn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = skm.f1_score([0, 0, 0], [0, 0, 0])
    assert metrics.f1_binary([0, 0, 0], [0, 0, 0]) == expected == 0.0


def test_compute_by_name() -> None:
    preds, refs = [1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0]
    result = metrics.compute(("f1", "accuracy", "matthews_corrcoef"), preds, refs)
    assert result == pytest.approx(
        {"f1": 2 / 3, "accuracy": 4 / 6, "matthews_corrcoef": (4 - 1) / 9}
    )
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.compute(("f2",), preds, refs)


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        metrics.accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="no predictions"):
        metrics.f1_binary([], [])


# --------------------------------------------------------------------------------------------
# Correlation against scipy
# --------------------------------------------------------------------------------------------


def _correlation_sets() -> list[tuple[np.ndarray, np.ndarray]]:
    """Continuous random data, tie-heavy data (STS-B style 0-5 scores on a coarse grid)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    y = 0.6 * x + rng.normal(size=300)
    ties_x = rng.integers(0, 6, 200).astype(float)
    ties_y = np.clip(ties_x + rng.integers(-2, 3, 200), 0, 5) / 1.0
    grid_x = np.round(rng.uniform(0, 5, 150) * 2) / 2  # half-point grid: many ties
    grid_y = np.round((grid_x + rng.normal(scale=1.0, size=150)) * 2) / 2
    return [(x, y), (ties_x, ties_y), (grid_x, grid_y), (np.arange(5.0), -(np.arange(5.0) ** 3))]


@pytest.mark.parametrize("case", range(4))
def test_correlations_equal_scipy(case: int) -> None:
    x, y = _correlation_sets()[case]
    assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_spearman_differs_from_pearson_of_ordinal_ranks_with_ties() -> None:
    # Average ranks matter: ranking ties by position would give a different coefficient.
    x = np.array([1.0, 1.0, 1.0, 2.0, 3.0, 3.0])
    y = np.array([3.0, 1.0, 2.0, 4.0, 6.0, 5.0])
    ordinal = stats.rankdata(x, method="ordinal")
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert metrics.spearman(x, y) != pytest.approx(stats.pearsonr(ordinal, y)[0])


def test_average_ranks_equal_scipy_rankdata() -> None:
    values = np.random.default_rng(2).integers(0, 7, 64)
    np.testing.assert_array_equal(metrics.average_ranks(values), stats.rankdata(values))


def test_constant_input_gives_nan_like_scipy() -> None:
    """Correlation with a constant input is undefined: nan, as scipy returns (with a warning)."""
    const = np.full(10, 3.0)
    other = np.arange(10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(stats.pearsonr(const, other)[0])
        assert math.isnan(stats.spearmanr(const, other)[0])
    assert math.isnan(metrics.pearson(const, other))
    assert math.isnan(metrics.pearson(other, const))
    assert math.isnan(metrics.spearman(const, other))
    with pytest.raises(ValueError, match="at least two"):
        metrics.pearson([1.0], [2.0])


# --------------------------------------------------------------------------------------------
# SQuAD
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, normal",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an  apple,   a pear ", "apple pear"),
        ("Theatre and anthem", "theatre and anthem"),  # articles only as whole words
        ("A.B.C.", "abc"),
        ("the-the", "thethe"),  # punctuation removed before articles are
        ("Rock 'n' Roll", "rock n roll"),
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, normal: str) -> None:
    assert metrics.normalize_answer(raw) == normal


def test_exact_match_and_f1_hand_worked() -> None:
    assert metrics.squad_exact_match("the Eiffel tower.", "Eiffel Tower") == 1.0
    assert metrics.squad_exact_match("Eiffel", "Eiffel Tower") == 0.0
    # pred: [eiffel, tower, paris] gold: [eiffel, tower] -> P 2/3, R 1, F1 0.8
    assert metrics.squad_f1("Eiffel Tower, Paris", "the Eiffel Tower") == pytest.approx(0.8)
    # repeated tokens count with multiplicity: pred [a1 a1 a1] vs gold [a1]: P 1/3, R 1 -> 0.5
    assert metrics.squad_f1("x x x", "x") == pytest.approx(0.5)
    # overlap is a multiset: [x x y] vs [x x z] share two tokens -> P 2/3, R 2/3
    assert metrics.squad_f1("x x y", "x x z") == pytest.approx(2 / 3)
    assert metrics.squad_f1("Paris", "London") == 0.0


def test_max_over_gold_answers() -> None:
    golds = ["Denver Broncos", "The Broncos", "Broncos of Denver"]
    em, f1 = metrics.squad_max_over_gold("broncos", golds)
    assert em == 1.0 and f1 == 1.0  # matches "The Broncos" after normalisation
    em, f1 = metrics.squad_max_over_gold("Denver", golds)
    # vs "Denver Broncos": P 1, R 1/2 -> 2/3; vs "Broncos of Denver": P 1, R 1/3 -> 0.5
    assert em == 0.0 and f1 == pytest.approx(2 / 3)


def test_unanswerable_questions() -> None:
    assert metrics.squad_max_over_gold("", []) == (1.0, 1.0)
    assert metrics.squad_max_over_gold("the", []) == (1.0, 1.0)  # normalises to ""
    assert metrics.squad_max_over_gold("Denver", []) == (0.0, 0.0)
    assert metrics.squad_max_over_gold("", ["Denver"]) == (0.0, 0.0)
    assert metrics.squad_max_over_gold("", ["a", "!"]) == (1.0, 1.0)  # golds normalise to ""
    # Golds that normalise to "" are dropped when a real answer remains.
    assert metrics.squad_max_over_gold("", ["!", "Denver"]) == (0.0, 0.0)


def _squad_v2() -> dict:
    return {
        "version": "v2.0",
        "data": [
            {
                "title": "Broncos",
                "paragraphs": [
                    {
                        "context": "...",
                        "qas": [
                            {"id": "q1", "answers": [{"text": "Denver Broncos"}]},
                            {
                                "id": "q2",
                                "answers": [{"text": "Santa Clara"}, {"text": "Levi's Stadium"}],
                            },
                            {"id": "q3", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            },
            {
                "title": "Other",
                "paragraphs": [
                    {
                        "context": "...",
                        "qas": [
                            {"id": "q4", "answers": [{"text": "1966"}]},
                            {"id": "q5", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            },
        ],
    }


def test_squad_scores_v2_dataset() -> None:
    predictions = {
        "q1": "the Denver Broncos",  # EM 1, F1 1
        "q2": "Levi's Stadium in Santa Clara",  # EM 0; vs "Levis Stadium": P 2/5 R 1 -> 4/7
        "q3": "",  # EM 1, F1 1
        # q4 missing: scores 0
        "q5": "Paris",  # EM 0, F1 0
    }
    result = metrics.squad_scores(predictions, _squad_v2())
    assert result["total"] == 5
    assert result["exact_match"] == pytest.approx(100 * 2 / 5)
    assert result["f1"] == pytest.approx(100 * (1 + 4 / 7 + 1 + 0 + 0) / 5)
    assert result["HasAns_total"] == 3 and result["NoAns_total"] == 2
    assert result["HasAns_exact_match"] == pytest.approx(100 / 3)
    assert result["HasAns_f1"] == pytest.approx(100 * (1 + 4 / 7) / 3)
    assert result["NoAns_exact_match"] == pytest.approx(50.0)
    assert result["NoAns_f1"] == pytest.approx(50.0)
    # The "data" list alone works the same.
    assert metrics.squad_scores(predictions, _squad_v2()["data"]) == result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_null_threshold_equals_a_sweep_of_scored_predictions(seed: int) -> None:
    """The threshold search gives the best score that thresholding the predictions at any
    odds value gives through squad_scores, and that threshold reproduces it."""
    rng = np.random.default_rng(seed)
    words = ["red", "blue", "the cat", "a dog", "green tea", "ten"]
    qas, spans, odds = [], {}, {}
    for i in range(40):
        answerable = rng.random() < 0.6
        gold = [words[rng.integers(len(words))]] if answerable else []
        qas.append({"id": f"q{i}", "answers": [{"text": g} for g in gold],
                    "is_impossible": not answerable})  # fmt: skip
        right = gold and rng.random() < 0.5
        spans[f"q{i}"] = gold[0] if right else words[rng.integers(len(words))]
        odds[f"q{i}"] = float(rng.integers(-4, 5))  # integers: many ties
    data = {"data": [{"paragraphs": [{"qas": qas}]}]}
    best = metrics.squad_best_null_threshold(spans, odds, data)

    def scores_at(threshold: float) -> dict[str, float]:
        predictions = {q: "" if odds[q] > threshold else spans[q] for q in spans}
        return metrics.squad_scores(predictions, data)

    candidates = [min(odds.values()) - 1.0, *sorted(set(odds.values()))]
    for name in ("exact_match", "f1"):
        top = best[f"best_{name}"]
        assert top == pytest.approx(max(scores_at(t)[name] for t in candidates))
        assert scores_at(best[f"best_{name}_threshold"])[name] == pytest.approx(top)


def test_squad_scores_v1_has_no_breakdown() -> None:
    data = _squad_v2()
    data["data"][0]["paragraphs"][0]["qas"].pop(2)
    data["data"][1]["paragraphs"][0]["qas"].pop(1)
    result = metrics.squad_scores({"q1": "Broncos", "q2": "santa clara", "q4": "1966."}, data)
    # q1: EM 0, F1 vs "denver broncos": P 1 R 1/2 -> 2/3; q2, q4 exact.
    assert result == pytest.approx(
        {"exact_match": 100 * 2 / 3, "f1": 100 * (2 / 3 + 2) / 3, "total": 3.0}
    )


# --------------------------------------------------------------------------------------------
# CoNLL-2003
# --------------------------------------------------------------------------------------------


def test_chunks_iob2_multi_token_and_adjacent() -> None:
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-PER", "B-PER", "I-PER"]
    assert metrics.get_chunks(tags) == [
        ("PER", 0, 2),
        ("LOC", 3, 6),
        ("PER", 6, 7),  # adjacent same-type entities stay separate
        ("PER", 7, 9),
    ]


def test_chunks_iob1_and_type_changes() -> None:
    # IOB1: I- after O starts a chunk; B- only separates adjacent same-type chunks.
    tags = ["I-ORG", "I-ORG", "B-ORG", "O", "I-PER", "I-LOC", "I-LOC", "I-MISC"]
    assert metrics.get_chunks(tags) == [
        ("ORG", 0, 2),
        ("ORG", 2, 3),
        ("PER", 4, 5),
        ("LOC", 5, 7),  # an I- of a different type starts a new chunk
        ("MISC", 7, 8),
    ]
    # An IOB2 B-X followed by I-Y: two chunks.
    assert metrics.get_chunks(["B-PER", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 2)]


def test_bad_tag_raises() -> None:
    with pytest.raises(ValueError, match="'PER'"):
        metrics.get_chunks(["B-PER", "PER"])
    with pytest.raises(ValueError, match="sentence 1: 2 predicted tags but 1"):
        metrics.conll_scores([["O"], ["O", "O"]], [["O"], ["O"]])


def test_conll_scores_hand_worked() -> None:
    refs = [
        ["B-PER", "I-PER", "O", "B-LOC", "O"],
        ["B-ORG", "I-ORG", "I-ORG", "O", "B-PER", "B-PER"],
    ]
    preds = [
        ["B-PER", "I-PER", "O", "B-ORG", "O"],  # PER right; LOC predicted as ORG (type mismatch)
        ["B-ORG", "I-ORG", "O", "O", "B-PER", "I-PER"],  # ORG too short; two PERs merged into one
    ]
    # gold: PER(0-2) LOC ORG PER PER = 5; predicted: PER ORG ORG PER(4-6) = 4; correct: 1
    result = metrics.conll_scores(preds, refs)
    assert result["precision"] == pytest.approx(1 / 4)
    assert result["recall"] == pytest.approx(1 / 5)
    assert result["f1"] == pytest.approx(2 * (1 / 4) * (1 / 5) / (1 / 4 + 1 / 5))
    assert result["accuracy"] == pytest.approx(8 / 11)
    per_type = metrics.conll_scores_per_type(preds, refs)
    assert set(per_type) == {"PER", "LOC", "ORG"}
    assert per_type["PER"] == pytest.approx(
        {"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "found": 2.0, "gold": 3.0}
    )
    assert per_type["LOC"] == pytest.approx(
        {"precision": 0.0, "recall": 0.0, "f1": 0.0, "found": 0.0, "gold": 1.0}
    )
    assert per_type["ORG"] == pytest.approx(
        {"precision": 0.0, "recall": 0.0, "f1": 0.0, "found": 2.0, "gold": 1.0}
    )


def test_chunks_do_not_cross_sentences() -> None:
    refs = [["O", "B-PER"], ["I-PER", "O"]]
    assert metrics.conll_scores(refs, refs)["f1"] == 1.0
    # As one sentence the I-PER continues the chunk; as two sentences it is a separate chunk.
    flat = metrics.conll_scores(["O", "B-PER", "I-PER", "O"], ["O", "B-PER", "O", "O"])
    split = metrics.conll_scores(refs, [["O", "B-PER"], ["O", "O"]])
    assert flat["precision"] == 0.0
    assert split["precision"] == 0.5


def _simple_chunks(tags: list[str]) -> set[tuple[str, int, int]]:
    """Independent chunker for B/I/O tags: walk tokens, open on B-X or on an I-X that does not
    continue an open chunk of type X, close on anything else."""
    chunks = set()
    open_type, open_start = None, 0
    for i, tag in enumerate([*tags, "O"]):
        kind, _, entity = tag.partition("-")
        continues = kind == "I" and entity == open_type
        if open_type is not None and not continues:
            chunks.add((open_type, open_start, i))
            open_type = None
        if kind in ("B", "I") and not continues:
            open_type, open_start = entity, i
    return chunks


def test_conll_equals_simple_implementation_on_random_tags() -> None:
    rng = np.random.default_rng(3)
    tag_set = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "I-MISC"]
    preds, refs = [], []
    for _ in range(200):
        n = int(rng.integers(1, 15))
        refs.append([tag_set[i] for i in rng.integers(0, len(tag_set), n)])
        # Predictions: the references with about a quarter of the tags replaced.
        noisy = [tag_set[i] for i in rng.integers(0, len(tag_set), n)]
        preds.append([noisy[i] if rng.random() < 0.25 else refs[-1][i] for i in range(n)])
    for tags in preds + refs:
        assert set(metrics.get_chunks(tags)) == _simple_chunks(tags)
    found = sum(len(_simple_chunks(p)) for p in preds)
    gold = sum(len(_simple_chunks(r)) for r in refs)
    correct = sum(
        len(_simple_chunks(p) & _simple_chunks(r)) for p, r in zip(preds, refs, strict=True)
    )
    result = metrics.conll_scores(preds, refs)
    precision, recall = correct / found, correct / gold
    assert 0 < correct < min(found, gold)  # the data exercises both hits and misses
    assert result["precision"] == pytest.approx(precision)
    assert result["recall"] == pytest.approx(recall)
    assert result["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    per_type = metrics.conll_scores_per_type(preds, refs)
    for entity_type in ("PER", "LOC", "ORG", "MISC"):
        type_found = sum(sum(c[0] == entity_type for c in _simple_chunks(p)) for p in preds)
        assert per_type[entity_type]["found"] == type_found
