"""Fine-tuning data: GLUE, CoNLL-2003 NER and STS readers, features and output files."""

import pathlib
import unicodedata

import numpy as np
import pytest

from bert.tasks import glue, ner, sts
from input_pipeline import tokenizers
from util.errors import UserError


@pytest.fixture(scope="module")
def tokenizer(shared_data: pathlib.Path) -> tokenizers.Tokenizer:
    return tokenizers.load_tokenizer(shared_data / "vocab" / "bert-base-uncased-vocab.txt")


def _letters(text: str) -> str:
    """Text as the uncased tokenizer sees it, without spaces: lower case, no accents."""
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c) != "Mn")


def _joined(tokenizer: tokenizers.Tokenizer, ids) -> str:
    return "".join(tokenizer.id_to_token(int(i)).removeprefix("##") for i in ids)


def _write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Published counts on the real files


@pytest.mark.parametrize(
    "task,folder,counts",
    [
        ("sst2", "SST-2", (67_349, 872, 1_821)),
        ("mrpc", "MRPC", (3_668, 408, 1_725)),
        ("stsb", "STS-B", (5_749, 1_500, 1_379)),
    ],
)
def test_glue_counts(shared_data, task, folder, counts):
    found = [
        len(glue.read_split(task, shared_data / "glue" / folder, s))
        for s in ("train", "dev", "test")
    ]
    assert tuple(found) == counts


def test_glue_test_files_keep_index_and_have_no_label(shared_data):
    examples = glue.read_split("mrpc", shared_data / "glue" / "MRPC", "test")
    assert all(e.label is None for e in examples)
    assert [e.index for e in examples[:3]] == ["0", "1", "2"]
    assert examples[0].text_b.startswith("Current Chief Operating Officer")
    train = glue.read_split("mrpc", shared_data / "glue" / "MRPC", "train")
    assert {e.label for e in train} == {"0", "1"}
    assert train[0].text_a.startswith("Amrozi accused")  # the BOM did not eat the header


def test_conll_counts_and_labels(shared_data):
    train = ner.read_conll(shared_data / "conll2003" / "train.txt")
    valid = ner.read_conll(shared_data / "conll2003" / "valid.txt")
    assert (len(train), len(valid)) == (14_041, 3_250)
    assert all(len(s.words) == len(s.tags) > 0 for s in train)
    assert not any("-DOCSTART-" in s.words for s in train)
    types = ("LOC", "MISC", "ORG", "PER")
    assert ner.label_list(train) == ["O", *[f"{p}-{t}" for t in types for p in "BI"]]


def test_sts_benchmark_counts_and_glue_agreement(shared_data):
    train = sts.read_sts_benchmark(shared_data / "stsbenchmark" / "sts-train.csv")
    dev = sts.read_sts_benchmark(shared_data / "stsbenchmark" / "sts-dev.csv")
    assert (len(train), len(dev)) == (5_749, 1_500)
    # Rows with extra source columns still give the right sentences.
    assert dev[0] == sts.Pair(
        "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0
    )
    glue_train = sts.read_glue_stsb(shared_data / "glue" / "STS-B" / "train.tsv")
    assert [p.score for p in glue_train] == [p.score for p in train]
    # GLUE's copy drops some leading spaces.
    assert [p.sentence1.strip() for p in glue_train] == [p.sentence1.strip() for p in train]
    test = sts.read_glue_stsb(shared_data / "glue" / "STS-B" / "test.tsv")
    assert len(test) == 1_379 and all(p.score is None for p in test)


# ---------------------------------------------------------------------------------------------
# Feature round trips


def test_single_sentence_features_decode_to_the_text(shared_data, tokenizer):
    examples = glue.read_split("sst2", shared_data / "glue" / "SST-2", "dev")
    features = glue.convert_examples_to_features(examples, "sst2", tokenizer, 128)
    ids, mask, segments = features["input_ids"], features["input_mask"], features["segment_ids"]
    assert ids.shape == (872, 128) and ids.dtype == np.int32
    assert features["label"].tolist() == [int(e.label) for e in examples]
    assert not segments.any()
    checked = 0
    for row, row_mask, example in zip(ids, mask, examples, strict=True):
        length = int(row_mask.sum())
        assert row_mask[:length].all() and not row_mask[length:].any()
        assert (row[length:] == tokenizer.pad_id).all()
        assert row[0] == tokenizer.cls_id and row[length - 1] == tokenizer.sep_id
        body = row[1 : length - 1]
        if tokenizer.unk_id not in body:
            assert _joined(tokenizer, body) == _letters(example.text_a)
            checked += 1
    assert checked > 850


def test_pair_features_segments_and_text(shared_data, tokenizer):
    examples = glue.read_split("mrpc", shared_data / "glue" / "MRPC", "dev")
    features = glue.convert_examples_to_features(examples, "mrpc", tokenizer, 128)
    checked = 0
    for i, example in enumerate(examples):
        row, segments = features["input_ids"][i], features["segment_ids"][i]
        length = int(features["input_mask"][i].sum())
        seps = np.flatnonzero(row == tokenizer.sep_id)
        assert len(seps) == 2 and seps[1] == length - 1
        first_end = seps[0]
        assert not segments[: first_end + 1].any()  # [CLS] a [SEP] -> segment 0
        assert segments[first_end + 1 : length].all()  # b [SEP] -> segment 1
        assert not segments[length:].any()
        a, b = row[1:first_end], row[first_end + 1 : length - 1]
        if tokenizer.unk_id not in row[:length]:
            assert _joined(tokenizer, a) == _letters(example.text_a)
            assert _joined(tokenizer, b) == _letters(example.text_b)
            checked += 1
    assert checked > 390


def test_pair_truncation_is_longest_first(shared_data, tokenizer):
    examples = glue.read_split("mrpc", shared_data / "glue" / "MRPC", "dev")[:50]
    features = glue.convert_examples_to_features(examples, "mrpc", tokenizer, 24)
    for i, example in enumerate(examples):
        full_a, full_b = (tokenizer.encode_ids(t) for t in (example.text_a, example.text_b))
        row = features["input_ids"][i]
        assert features["input_mask"][i].all()  # every MRPC pair is longer than 24 tokens
        first_end = np.flatnonzero(row == tokenizer.sep_id)[0]
        a, b = row[1:first_end].tolist(), row[first_end + 1 : -1].tolist()
        assert len(a) + len(b) == 21
        assert a == full_a[: len(a)] and b == full_b[: len(b)]
        # The longer side was cut first: a side keeps all of itself, or they end level.
        assert len(a) == len(full_a) or len(b) == len(full_b) or abs(len(a) - len(b)) <= 1


def test_regression_labels_are_float(shared_data, tokenizer):
    pairs = sts.read_sts_benchmark(shared_data / "stsbenchmark" / "sts-dev.csv")[:20]
    features = sts.pair_features(tokenizer, pairs, 64)
    assert features["label"].dtype == np.float32
    np.testing.assert_allclose(features["label"], [p.score for p in pairs], rtol=1e-6)
    single = sts.sentence_features(tokenizer, [p.sentence1 for p in pairs], 64)
    assert not single["segment_ids"].any()
    row = single["input_ids"][0, : int(single["input_mask"][0].sum())]
    assert _joined(tokenizer, row[1:-1]) == _letters(pairs[0].sentence1)


def test_ner_first_sub_token_rule_and_round_trip(shared_data, tokenizer, tmp_path):
    sentences = ner.read_conll(shared_data / "conll2003" / "valid.txt")
    labels = ner.label_list(sentences)
    features = ner.convert_sentences_to_features(sentences, labels, tokenizer, 180)
    split_words = 0
    for i, sentence in enumerate(sentences):
        row, label = features["input_ids"][i], features["label"][i]
        starts = np.flatnonzero(features["word_starts"][i])
        length = int(features["input_mask"][i].sum())
        assert len(starts) == len(sentence.words)  # nothing truncated at 180
        assert label[starts].tolist() == [labels.index(t) for t in sentence.tags]
        assert (np.delete(label, starts) == ner.IGNORE).all()
        ends = [*starts[1:], length - 1]
        for word, start, end in zip(sentence.words, starts, ends, strict=True):
            pieces = row[start:end]
            split_words += len(pieces) > 1
            if tokenizer.unk_id not in pieces:
                assert _joined(tokenizer, pieces) == _letters(word)
    assert split_words > 1000  # the rule was exercised on many multi-piece words
    windows = ner.window_features(sentences, labels, tokenizer, 180, 32)
    assert all(np.array_equal(windows[k], v) for k, v in features.items())  # one row each
    gold_as_prediction = np.where(features["label"] >= 0, features["label"], 0)
    tags = ner.predictions_to_tags(gold_as_prediction, windows, sentences, labels)
    assert tags == [s.tags for s in sentences]
    out = tmp_path / "pred.txt"
    ner.write_conll_predictions(out, sentences, tags)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["CRICKET O O", "- O O"]
    again = ner.read_conll(out)  # word gold pred: the last column is the prediction
    assert [s.words for s in again] == [s.words for s in sentences]
    assert [s.tags for s in again] == tags


def test_ner_training_rows_cut_and_windows_keep_every_word(tokenizer):
    sentence = ner.Sentence(["Zwolsdorfer", "unbelievably", "x", "y"], ["B-LOC", "O", "O", "O"])
    labels = ["O", "B-LOC"]
    assert len(tokenizer.encode_ids(sentence.words[0])) > 2
    features = ner.convert_sentences_to_features([sentence], labels, tokenizer, 6)
    assert features["word_starts"][0].sum() < 4
    assert features["label"][0, 1] == 1 and features["label"][0, 2] == ner.IGNORE
    assert ner.count_cut([sentence], features) == (1, 4 - features["word_starts"][0].sum())
    windows = ner.window_features([sentence], labels, tokenizer, 6, 2)
    gold = np.where(windows["label"] >= 0, windows["label"], 0)
    assert ner.predictions_to_tags(gold, windows, [sentence], labels) == [sentence.tags]


# ---------------------------------------------------------------------------------------------
# Submission files


def test_submission_files(tmp_path):
    test = _write(tmp_path, "test_matched.tsv", "index\tsentence1\tsentence2\n7\ta\tb\n9\tc\td\n")
    examples = glue.read_examples("mnli", test)
    out = tmp_path / "sub" / "MNLI-m.tsv"
    glue.write_submission(out, "mnli", examples, np.array([2, 0]))
    assert out.read_text() == "index\tprediction\n7\tneutral\n9\tcontradiction\n"
    stsb = tmp_path / "STS-B.tsv"
    glue.write_submission(stsb, "stsb", [glue.Example("g", "a", "b", None, "3")], [5.4])
    assert stsb.read_text() == "index\tprediction\n3\t5.000\n"
    bad = tmp_path / "bad.tsv"
    with pytest.raises(ValueError, match="class id"):
        glue.write_submission(bad, "mnli", examples, [1, 3])
    assert not bad.exists() and not list(tmp_path.glob(".bad*"))
    with pytest.raises(ValueError, match="predictions of shape"):
        glue.write_submission(bad, "mnli", examples, [1])


# ---------------------------------------------------------------------------------------------
# Layouts and bad input


def test_cola_layouts(tmp_path):
    train = _write(tmp_path, "train.tsv", "gj04\t1\t\tThe sailors rode the breeze.\nx\t0\t*\tBad\n")
    examples = glue.read_examples("cola", train)
    assert [(e.text_a, e.label, e.text_b) for e in examples] == [
        ("The sailors rode the breeze.", "1", None),
        ("Bad", "0", None),
    ]
    test = _write(tmp_path, "test.tsv", "index\tsentence\n0\tBill whistled.\n")
    assert glue.read_examples("cola", test) == [
        glue.Example("test.tsv:2", "Bill whistled.", None, None, "0")
    ]


def test_quotes_do_not_merge_rows(tmp_path):
    path = _write(tmp_path, "dev.tsv", 'sentence\tlabel\n" a quote\t1\nends "\t0\n\ufeffx\t1\n')
    assert [e.text_a for e in glue.read_examples("sst2", path)] == [
        '" a quote',
        'ends "',
        "\ufeffx",
    ]


def test_missing_column(tmp_path):
    short_row = _write(tmp_path, "dev.tsv", "sentence\tlabel\ngood\t1\nno label here\n")
    with pytest.raises(ValueError, match=f"{short_row}:3: missing column"):
        glue.read_examples("sst2", short_row)
    header = "Quality\t#1 ID\t#2 ID\t#1 String\n"
    no_header_column = _write(tmp_path, "train.tsv", "\ufeff" + header + "1\t1\t2\ta\n")
    with pytest.raises(ValueError, match=f"{no_header_column}:1: missing column '#2 String'"):
        glue.read_examples("mrpc", no_header_column)
    cola = _write(tmp_path, "cola.tsv", "gj04\t1\n")
    with pytest.raises(ValueError, match="cola.tsv:1: missing column"):
        glue.read_examples("cola", cola)
    sts_file = _write(tmp_path, "sts.csv", "g\tf\t2012\t1\t4.0\tonly one sentence\n")
    with pytest.raises(ValueError, match="sts.csv:1: missing column"):
        sts.read_sts_benchmark(sts_file)


def test_a_tab_inside_a_text_is_refused_not_read_shifted(tmp_path):
    """CoLA has no header: an extra tab made the sentence's first part the text ('Herman')."""
    cola = _write(tmp_path, "train.tsv", "gj04\t1\t\tOk.\ngj04\t1\t\tHerman\thugged Mary.\n")
    with pytest.raises(UserError, match=r"train.tsv:2: 5 tab-separated fields where cola rows "
                       r"have 4: a tab inside a text\? Replace it with a space$"):  # fmt: skip
        glue.read_examples("cola", cola)
    sst2 = _write(tmp_path, "dev.tsv", "sentence\tlabel\ngood\t1\nit is\tnot bad\t0\n")
    with pytest.raises(UserError, match=r"dev.tsv:3: 3 tab-separated fields where the header "
                       r"has 2"):  # fmt: skip
        glue.read_examples("sst2", sst2)


def test_label_outside_the_set(tmp_path):
    path = _write(tmp_path, "dev.tsv", "sentence\tlabel\ngood\t1\nbad\t2\n")
    with pytest.raises(ValueError, match=f"{path}:3: label '2' is not one of the sst2 labels"):
        glue.read_examples("sst2", path)
    rte = _write(tmp_path, "rte.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tneutral\n")
    with pytest.raises(ValueError, match="rte.tsv:2: label 'neutral'"):
        glue.read_examples("rte", rte, labeled=True)
    stsb = _write(tmp_path, "stsb.tsv", "sentence1\tsentence2\tscore\na\tb\thigh\n")
    with pytest.raises(ValueError, match="stsb.tsv:2: label 'high' is not a number"):
        glue.read_examples("stsb", stsb)
    sts_file = _write(tmp_path, "sts.csv", "g\tf\t2012\t1\t7.5\ta\tb\n")
    with pytest.raises(ValueError, match="sts.csv:1: score 7.5 is outside"):
        sts.read_sts_benchmark(sts_file)


def test_bad_conll_tags(tmp_path):
    iob1 = _write(tmp_path, "iob1.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP I-ORG\n")
    with pytest.raises(ValueError, match="iob1.txt:3: tag 'I-ORG' follows 'O'"):
        ner.read_conll(iob1)
    odd = _write(tmp_path, "odd.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP X-ORG\n")
    with pytest.raises(ValueError, match="odd.txt:2: tag 'X-ORG' is not IOB2"):
        ner.read_conll(odd)


def test_unknown_task_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown GLUE task 'squad'.*cola, sst2, mrpc, stsb"):
        glue.get_task("squad")
    with pytest.raises(ValueError, match="known tasks"):
        glue.read_examples("mnli-mm", tmp_path / "dev.tsv")
    assert glue.get_task("SST-2") is glue.TASKS["sst2"]
    assert set(glue.TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert glue.TASKS["stsb"].is_regression and glue.TASKS["stsb"].num_labels == 1
    assert glue.TASKS["mnli"].submission_names["test_mismatched"] == "MNLI-mm.tsv"
