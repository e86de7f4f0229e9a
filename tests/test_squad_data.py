"""SQuAD data: reader counts, windows, span <-> character offsets, n-best decoding, v2.0 null."""

import json
import pathlib
import re
import string

import numpy as np
import pytest

from bert.tasks import squad
from input_pipeline import tokenizers as tok_lib
from util.errors import UserError

MAX_SEQ, STRIDE, MAX_QUERY = 384, 128, 64


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower-case, no punctuation/articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


@pytest.fixture(scope="module")
def tokenizer(shared_data: pathlib.Path) -> tok_lib.WordPieceTokenizer:
    return tok_lib.load_wordpiece(shared_data / "vocab" / "bert-base-uncased-vocab.txt", True)


@pytest.fixture(scope="module")
def dev_train_mode(shared_data, tokenizer):
    """SQuAD v1.1 dev read in training mode (first answer) and featurised once."""
    data = squad.read_squad(shared_data / "squad" / "dev-v1.1.json", is_training=True)
    features = squad.make_features(
        data.examples,
        tokenizer,
        max_seq_length=MAX_SEQ,
        doc_stride=STRIDE,
        max_query_length=MAX_QUERY,
        is_training=True,
    )
    return data, features


def test_dev_v11_counts(shared_data):
    data = squad.read_squad(shared_data / "squad" / "dev-v1.1.json", is_training=False)
    assert (len(data.examples), data.num_articles, data.version) == (10570, 48, "1.1")
    assert len({e.qid for e in data.examples}) == 10570
    assert data.skipped == [] and not any(e.is_impossible for e in data.examples)
    assert all(len(e.answers) >= 1 for e in data.examples)


def test_dev_answers_map_to_tokens_and_back(dev_train_mode):
    data, features = dev_train_mode
    assert len(data.examples) + len(data.skipped) == 10570
    recovered: dict[int, str] = {}
    for f in features:
        if f.start_position > 0 and f.example_index not in recovered:
            assert f.segment_ids[f.start_position] == 1 and f.end_position >= f.start_position
            begin, end = f.offsets[f.start_position, 0], f.offsets[f.end_position, 1]
            recovered[f.example_index] = data.examples[f.example_index].context[begin:end]
    hits = sum(
        normalize_answer(recovered.get(i, "")) == normalize_answer(e.answers[0].text)
        for i, e in enumerate(data.examples)
    )
    rate = hits / len(data.examples)
    print(f"answer recovery via offsets: {hits}/{len(data.examples)} = {rate:.4%}")
    assert rate >= 0.99


def test_sentencepiece_offsets_recover_dev_answers(shared_data, tmp_path):
    """A SentencePiece model (as pre-training trains by default) gives exact character
    offsets too: answers mapped to tokens and back match for at least 99% of dev questions."""
    wiki = shared_data / "wikipedia" / "AA" / "wiki_00"
    lines = [line for line in wiki.read_text().splitlines() if line and line[0] != "<"]
    sp = tok_lib.train_sentencepiece(tmp_path / "sp", 4000, sentences=lines)
    data = squad.read_squad(shared_data / "squad" / "dev-v1.1.json", is_training=True)
    features = squad.make_features(
        data.examples, sp, max_seq_length=MAX_SEQ, doc_stride=STRIDE,
        max_query_length=MAX_QUERY, is_training=True,
    )  # fmt: skip
    recovered: dict[int, str] = {}
    for f in features:
        if f.start_position > 0 and f.example_index not in recovered:
            begin, end = f.offsets[f.start_position, 0], f.offsets[f.end_position, 1]
            context = data.examples[f.example_index].context
            recovered[f.example_index] = context[begin:end]
            assert sp.encode_ids(context[begin:end].strip())  # offsets are inside the text
    hits = sum(
        normalize_answer(recovered.get(i, "")) == normalize_answer(e.answers[0].text)
        for i, e in enumerate(data.examples)
    )
    print(f"SentencePiece answer recovery: {hits}/{len(data.examples)}")
    assert hits / len(data.examples) >= 0.99


def test_dev_decoding_of_peaked_logits_recovers_answers(dev_train_mode):
    """Logits that peak on each feature's target decode back to the gold text (n-best path)."""
    data, features = dev_train_mode
    arrays = squad.features_to_arrays(features)
    n = len(features)
    assert arrays["input_ids"].shape == (n, MAX_SEQ)
    start = np.full((n, MAX_SEQ), -10.0, np.float32)
    end = np.full((n, MAX_SEQ), -10.0, np.float32)
    rows = np.arange(n)
    start[rows, arrays["start_positions"]] = 10.0
    end[rows, arrays["end_positions"]] = 10.0
    predictions, null_odds, nbest = squad.decode_predictions(
        data.examples,
        features,
        start,
        end,
        n_best_size=20,
        max_answer_length=30,
        version_2_with_negative=False,
        null_score_diff_threshold=0.0,
    )
    assert null_odds == {} and len(predictions) == len(data.examples)
    hits = sum(
        normalize_answer(predictions[e.qid]) == normalize_answer(e.answers[0].text)
        for e in data.examples
    )
    print(f"decoded answer recovery: {hits}/{len(data.examples)} = {hits / len(data.examples):.4%}")
    assert hits / len(data.examples) >= 0.99
    assert all(len(c) <= 20 for c in nbest.values())


def test_dev_windows_cover_context_and_max_context_is_unique(dev_train_mode, tokenizer):
    data, features = dev_train_mode
    max_context_count: dict[tuple[int, tuple[int, int]], int] = {}
    covered: dict[int, set[tuple[int, int]]] = {}
    for f in features:
        ctx = f.offsets[:, 0] >= 0
        assert np.array_equal(ctx, f.segment_ids.astype(bool) & (f.input_ids != 102))
        spans = {tuple(o) for o in f.offsets[ctx].tolist()}
        covered.setdefault(f.example_index, set()).update(spans)
        for o in f.offsets[f.token_is_max_context].tolist():
            key = (f.example_index, tuple(o))
            max_context_count[key] = max_context_count.get(key, 0) + 1
    contexts = [e.context for e in data.examples]
    encodings = tokenizer._tokenizer.encode_batch(contexts, add_special_tokens=False)
    for i, enc in enumerate(encodings):
        assert covered[i] == set(enc.offsets)  # every context token is in some window
    # Each token is the max-context token of exactly one window.
    assert all(v == 1 for v in max_context_count.values())


def test_long_context_windows_overlap_by_stride(tokenizer):
    words = [f"w{i % 7}x" for i in range(300)]  # each word: 'w', '##N', '##x' or similar
    context = " ".join(words)
    example = squad.SquadExample("q0", "what is it?", context, (), False)
    features = squad.make_features(
        [example], tokenizer, max_seq_length=64, doc_stride=16, max_query_length=8, is_training=True
    )
    full = tokenizer._tokenizer.encode(context, add_special_tokens=False)
    index = {tuple(o): i for i, o in enumerate(full.offsets)}
    assert len(index) == len(full.offsets)
    windows = []
    for f in features:
        ctx = np.nonzero(f.offsets[:, 0] >= 0)[0]
        token_ids = [index[tuple(o)] for o in f.offsets[ctx].tolist()]
        assert token_ids == list(range(token_ids[0], token_ids[0] + len(token_ids)))
        assert f.input_ids[ctx].tolist() == full.ids[token_ids[0] : token_ids[-1] + 1]
        assert (f.start_position, f.end_position) == (0, 0)
        windows.append((token_ids[0], len(token_ids)))
    assert len(windows) > 3
    query_len = len(tokenizer.encode_ids("what is it?"))
    for (s0, n0), (s1, _) in zip(windows, windows[1:], strict=False):
        assert n0 == 64 - query_len - 3 and s1 - s0 == 16  # overlap of n0 - stride tokens
    assert windows[0][0] == 0 and windows[-1][0] + windows[-1][1] == len(full.ids)
    # Max-context rule, checked against its definition token by token.
    for f, (s0, n0) in zip(features, windows, strict=True):
        ctx = np.nonzero(f.offsets[:, 0] >= 0)[0]
        for k, t in enumerate(range(s0, s0 + n0)):
            scores = [
                min(t - s, s + n - 1 - t) + 0.01 * n if s <= t < s + n else -1e9 for s, n in windows
            ]
            assert f.token_is_max_context[ctx[k]] == (windows[int(np.argmax(scores))][0] == s0)


def _span_logits(feature, begin_char: int, end_char: int, peak: float = 8.0):
    """Logits peaking on the context tokens that cover characters [begin_char, end_char)."""
    o = feature.offsets
    tokens = np.nonzero((o[:, 0] >= 0) & (o[:, 1] > begin_char) & (o[:, 0] < end_char))[0]
    start = np.zeros(len(o), np.float32)
    end = np.zeros(len(o), np.float32)
    start[tokens[0]] = end[tokens[-1]] = peak
    return start, end


def test_synthetic_logits_decode_to_exact_substring(tokenizer):
    context = (
        "In 1848, Ada Lovelace’s NOTES on the Analytical Engine were published in Londonderry."
    )
    example = squad.SquadExample("q1", "Whose notes?", context, (), False)
    (feature,) = squad.make_features(
        [example],
        tokenizer,
        max_seq_length=64,
        doc_stride=16,
        max_query_length=8,
        is_training=False,
    )
    target = "Lovelace’s NOTES"
    begin = context.index(target)
    start, end = _span_logits(feature, begin, begin + len(target))
    start[1] = 50.0  # a question token: never a valid start
    end[0] = 40.0  # [CLS]: never a valid span end in v1.1
    kwargs = dict(n_best_size=20, max_answer_length=30, null_score_diff_threshold=0.0)
    predictions, _, nbest = squad.decode_predictions(
        [example], [feature], start[None], end[None], version_2_with_negative=False, **kwargs
    )
    assert predictions == {"q1": target}  # exact original casing and the curly apostrophe
    assert nbest["q1"][0].score == pytest.approx(16.0)
    # A span ending inside a word ("Londonderry" is several word pieces) maps exactly too.
    begin = context.index("Londonderry")
    start, end = _span_logits(feature, begin, begin + 3)
    predictions, _, _ = squad.decode_predictions(
        [example], [feature], start[None], end[None], version_2_with_negative=False, **kwargs
    )
    assert context.index(predictions["q1"]) == begin and "Londonderry".startswith(predictions["q1"])
    # An end before the start is rejected.
    start, end = np.zeros((1, 64), np.float32), np.zeros((1, 64), np.float32)
    ctx = np.nonzero(feature.offsets[:, 0] >= 0)[0]
    start[0, ctx[5]], end[0, ctx[2]], end[0, ctx[6]] = 9.0, 9.0, 3.0
    predictions, _, _ = squad.decode_predictions(
        [example], [feature], start, end, version_2_with_negative=False, **kwargs
    )
    o = feature.offsets
    assert predictions["q1"] == context[o[ctx[5], 0] : o[ctx[6], 1]]
    # A span longer than max_answer_length is rejected: the best is then a single token.
    kwargs["max_answer_length"] = 1
    predictions, _, _ = squad.decode_predictions(
        [example], [feature], start, end, version_2_with_negative=False, **kwargs
    )
    assert predictions["q1"] == context[o[ctx[5], 0] : o[ctx[5], 1]]


V2_DATA = {
    "version": "v2.0",
    "data": [
        {
            "title": "Rivers",
            "paragraphs": [
                {
                    "context": "The Danube flows through Vienna and Budapest to the Black Sea.",
                    "qas": [
                        {
                            "id": "possible",
                            "question": "Where does the Danube end?",
                            "answers": [{"text": "the Black Sea", "answer_start": 48}],
                            "is_impossible": False,
                        },
                        {
                            "id": "impossible",
                            "question": "Where does the Danube start in Paris?",
                            "answers": [],
                            "plausible_answers": [{"text": "Vienna", "answer_start": 25}],
                            "is_impossible": True,
                        },
                        {
                            "id": "wrong",
                            "question": "Which city?",
                            "answers": [{"text": "Vienna", "answer_start": 0}],
                            "is_impossible": False,
                        },
                    ],
                }
            ],
        }
    ],
}


def test_v2_null_score_and_threshold(tokenizer, tmp_path):
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(V2_DATA), encoding="utf-8")
    data = squad.read_squad(path, is_training=True)
    assert [e.qid for e in data.examples] == ["possible", "impossible"] and data.skipped == [
        "wrong"
    ]
    impossible = data.examples[1]
    assert impossible.is_impossible and impossible.answers == ()
    features = squad.make_features(
        data.examples, tokenizer, max_seq_length=64, doc_stride=16, max_query_length=16,
        is_training=True,
    )  # fmt: skip
    assert len(features) == 2 and (features[1].start_position, features[1].end_position) == (0, 0)
    f0 = features[0]
    context = data.examples[0].context
    assert context[f0.offsets[f0.start_position, 0] : f0.offsets[f0.end_position, 1]] == (
        "the Black Sea"
    )
    start = np.zeros((2, 64), np.float32)
    end = np.zeros((2, 64), np.float32)
    start[0, f0.start_position] = end[0, f0.end_position] = 6.0  # span 12 beats null 2
    start[0, 0] = end[0, 0] = 1.0
    vienna = context.index("Vienna")
    s, e = _span_logits(features[1], vienna, vienna + 6, peak=3.0)  # span 6 vs null 10
    start[1], end[1] = s, e
    start[1, 0] = end[1, 0] = 5.0
    kwargs = dict(n_best_size=20, max_answer_length=30, version_2_with_negative=True)
    predictions, null_odds, _ = squad.decode_predictions(
        data.examples, features, start, end, null_score_diff_threshold=0.0, **kwargs
    )
    assert predictions == {"possible": "the Black Sea", "impossible": ""}
    assert null_odds == pytest.approx({"possible": -10.0, "impossible": 4.0})
    predictions, _, _ = squad.decode_predictions(
        data.examples, features, start, end, null_score_diff_threshold=4.5, **kwargs
    )
    assert predictions == {"possible": "the Black Sea", "impossible": "Vienna"}
    written = squad.write_predictions(tmp_path / "out", predictions, null_odds)
    assert [p.name for p in written] == ["predictions.json", "null_odds.json"]
    assert json.loads(written[0].read_text(encoding="utf-8")) == predictions
    assert json.loads(written[1].read_text(encoding="utf-8")) == pytest.approx(null_odds)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "null_odds.json",
        "predictions.json",
    ]  # no temporary file left behind


def test_misplaced_answer_is_skipped_only_in_training(tmp_path):
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(V2_DATA), encoding="utf-8")
    data = squad.read_squad(path, is_training=False)
    assert [e.qid for e in data.examples] == ["possible", "impossible", "wrong"]
    assert data.skipped == [] and data.version == "v2.0"


def test_malformed_files_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="missing.json"):
        squad.read_squad(tmp_path / "missing.json", is_training=False)
    path = tmp_path / "bad.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid SQuAD JSON"):
        squad.read_squad(path, is_training=False)
    broken = json.loads(json.dumps(V2_DATA))
    del broken["data"][0]["paragraphs"][0]["qas"][1]["question"]
    path.write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(ValueError, match=r"qas\[1\] has no field 'question'"):
        squad.read_squad(path, is_training=False)
