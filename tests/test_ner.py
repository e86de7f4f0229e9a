"""NER input faults and long sentences: the tag column (a chunk column refused, the one named by
config.tag_column read, ragged lines refused), evaluation windows that score every word of a
sentence longer than max_seq_length from its own first sub-token in its max-context window,
and the one warning that counts the words training rows cut."""

import logging
import pathlib
import re

import numpy as np
import pytest
from test_finetune_jobs import quick

from bert.jobs import ner as ner_job
from bert.tasks import ner
from configs import ner as ner_config
from input_pipeline import tokenizers
from util.errors import UserError

# `word POS NER chunk`: the NER tag in the third of four columns, the chunk tag last.
NER_THIRD = """-DOCSTART- -X- O -X-

EU NNP B-ORG B-NP
rejects VBZ O B-VP
German JJ B-MISC B-NP
call NN O I-NP
. . O O

Peter NNP B-PER B-NP
Blackburn NNP I-PER I-NP
"""


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text, encoding="utf-8")
    return path


def _swap_last_columns(source: pathlib.Path, target: pathlib.Path, limit: int = 0) -> None:
    """A copy of a CoNLL-2003 file (its first `limit` lines; 0: all) as `word POS NER chunk`."""
    lines = source.read_text(encoding="utf-8").splitlines()[: limit or None]
    out = [" ".join([*f[:2], f[3], f[2]]) if len(f) == 4 else " ".join(f)
           for f in (line.split() for line in lines)]  # fmt: skip
    target.write_text("\n".join(out) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The tag column


def test_chunk_tags_in_the_tag_column_are_refused_naming_the_ner_column(tmp_path):
    path = _write(tmp_path / "train.txt", NER_THIRD)
    with pytest.raises(UserError) as error:
        ner.read_conll(path)
    assert str(error.value) == (
        f"{path}:3: the tag column, 3 (config.tag_column=-1; column 0 is the word), holds the "
        "syntactic chunk tag 'B-NP', not an NER tag; column 2 looks like NER tags: set "
        "config.tag_column=2"
    )
    # IOB1 chunk tags (I-NP first) would fail the IOB2 check; the chunk check speaks first.
    iob1 = _write(tmp_path / "iob1.txt", "EU NNP B-ORG I-NP\nrejects VBZ O I-VP\n")
    with pytest.raises(UserError, match=r"iob1.txt:1: the tag column, 3 .* chunk tag 'I-NP'.*"
                       r"column 2 looks like NER tags"):  # fmt: skip
        ner.read_conll(iob1)
    chunks_only = _write(tmp_path / "chunks.txt", "EU NNP B-NP\nrejects VBZ B-VP\n")
    with pytest.raises(UserError, match=r"chunks.txt:1: .*'B-NP', not an NER tag; no other "
                       r"column holds NER tags"):  # fmt: skip
        ner.read_conll(chunks_only)


def test_tag_column_reads_the_named_column(tmp_path):
    path = _write(tmp_path / "train.txt", NER_THIRD)
    sentences = ner.read_conll(path, tag_column=2)
    assert [(s.words, s.tags) for s in sentences] == [
        (["EU", "rejects", "German", "call", "."], ["B-ORG", "O", "B-MISC", "O", "O"]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    ]
    assert ner.read_conll(path, tag_column=-2) == sentences
    for column, message in [(4, "outside the line's 4 columns"), (-5, "outside"),
                            (0, "is the word"), (-4, "is the word")]:  # fmt: skip
        with pytest.raises(UserError, match=f"train.txt:3: tag_column={column} .*{message}"):
            ner.read_conll(path, tag_column=column)


def test_real_conll_with_the_ner_tag_third_reads_as_the_original(shared_data, tmp_path):
    original = shared_data / "conll2003" / "valid.txt"
    swapped = tmp_path / "valid.txt"
    _swap_last_columns(original, swapped)
    with pytest.raises(UserError, match=r"valid.txt:3: .*set config.tag_column=2$"):
        ner.read_conll(swapped)
    read = ner.read_conll(swapped, tag_column=2)
    assert [(s.words, s.tags) for s in read] == [
        (s.words, s.tags) for s in ner.read_conll(original)
    ]


def test_ragged_line_is_refused_naming_file_and_line(tmp_path):
    path = _write(tmp_path / "train.txt", NER_THIRD + "\nJapan NNP B-LOC\n")
    first, ragged = 3, NER_THIRD.count("\n") + 2
    expected = (f"{path}:{ragged}: 3 columns, but the first token line ({path}:{first}) has 4; "
                "every token line needs the same columns")  # fmt: skip
    with pytest.raises(UserError, match=f"^{re.escape(expected)}$"):
        ner.read_conll(path, tag_column=2)
    two = _write(tmp_path / "two.txt", "x\tO\ny\tB-LOC\tB-NP\n")
    with pytest.raises(UserError, match=r"two.txt:2: 3 columns, .*two.txt:1\) has 2"):
        ner.read_conll(two)


def test_msra_two_columns(shared_data, tmp_path):
    """MSRA's `char<TAB>tag` lines (its first 5,000): every character a word, its tag the last
    column, the same with tag_column=1."""
    lines = (shared_data / "chinese" / "msra" / "train.txt").open(encoding="utf-8").readlines()
    head = _write(tmp_path / "msra.txt", "".join(lines[:5000]))
    sentences = ner.read_conll(head)
    rows = [line.rstrip("\n").split("\t") for line in lines[:5000]]
    tokens = [row for row in rows if row != [""]]
    assert [(w, t) for s in sentences for w, t in zip(s.words, s.tags, strict=True)] == [
        tuple(row) for row in tokens
    ]
    assert {t for s in sentences for t in s.tags} > {"O", "B-LOC", "I-LOC"}
    assert ner.read_conll(head, tag_column=1) == sentences


# ---------------------------------------------------------------------------------------------
# Long sentences: windows


@pytest.fixture(scope="module")
def tokenizer(shared_data: pathlib.Path) -> tokenizers.Tokenizer:
    return tokenizers.load_tokenizer(shared_data / "vocab" / "bert-base-uncased-vocab.txt")


def _long_sentences(shared_data: pathlib.Path) -> list[ner.Sentence]:
    """Runs of 6 real validation sentences joined into one, and one with a word of more
    sub-tokens than a window holds."""
    valid = ner.read_conll(shared_data / "conll2003" / "valid.txt")[:60]
    joined = [
        ner.Sentence([w for s in run for w in s.words], [t for s in run for t in s.tags])
        for run in (valid[i : i + 6] for i in range(0, 60, 6))
    ]
    giant = "pneumonoultramicroscopicsilicovolcanoconiosisxqzj" * 2
    words = ["The", "word", giant, "is", "long", ",", "says", "Peter", "Blackburn", "."]
    tags = ["O", "O", "B-MISC", "O", "O", "O", "O", "B-PER", "I-PER", "O"]
    return [*joined, ner.Sentence(words, tags), valid[0]]


def _pieces(tokenizer: tokenizers.Tokenizer, word: str) -> list[int]:
    return tokenizer.encode_ids(word) or [tokenizer.unk_id]


def _expected_windows(total: int, room: int, stride: int) -> list[tuple[int, int]]:
    spans, start = [], 0
    while True:
        spans.append((start, min(room, total - start)))
        if start + room >= total:
            return spans
        start += stride


def _expected_window(spans: list[tuple[int, int]], position: int) -> int:
    """BERT's SQuAD max-context rule, written out: the first best of min(left, right) + 0.01 n."""
    best, best_score = -1, None
    for i, (start, length) in enumerate(spans):
        if start <= position < start + length:
            left, right = position - start, start + length - 1 - position
            score = min(left, right) + 0.01 * length
            if best_score is None or score > best_score:
                best, best_score = i, score
    return best


def _one_hot_logits(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Logits [rows, length, num_classes] whose argmax at each position is `classes` there."""
    logits = np.random.default_rng(0).normal(size=(*classes.shape, num_classes))
    np.put_along_axis(logits, classes[..., None], 10.0, axis=-1)
    return logits.astype(np.float32)


@pytest.mark.parametrize("stride", [1, 5, 14])
def test_windows_score_every_word_from_its_first_sub_token_in_its_max_context_window(
    shared_data, tokenizer, stride
):
    max_seq_length, room = 16, 14
    sentences = _long_sentences(shared_data)
    labels = ner.label_list(sentences)
    features = ner.window_features(sentences, labels, tokenizer, max_seq_length, stride)
    ids, rows = features["input_ids"], len(features["input_ids"])
    # Class ids that name each position (row, column), and logits that name the input id there.
    position_tags = [f"{r}:{c}" for r in range(rows) for c in range(max_seq_length)]
    by_position = np.arange(rows * max_seq_length).reshape(rows, max_seq_length)
    chosen = ner.predictions_to_tags(by_position, features, sentences, position_tags)
    vocabulary = np.unique(ids)
    by_id = ner.predictions_to_tags(
        _one_hot_logits(np.searchsorted(vocabulary, ids), len(vocabulary)).argmax(-1),
        features, sentences, [str(i) for i in vocabulary],
    )  # fmt: skip

    row = 0
    first_losers = last_losers = past_the_cut = 0
    for s, sentence in enumerate(sentences):
        pieces = [_pieces(tokenizer, w) for w in sentence.words]
        flat = [i for p in pieces for i in p]
        offsets = np.cumsum([0, *[len(p) for p in pieces[:-1]]])
        spans = _expected_windows(len(flat), room, stride)
        for start, length in spans:  # the rows of this sentence, in order
            n = length + 2
            assert ids[row, :n].tolist() == tokenizer.build_inputs(flat[start:][:length])[0]
            assert features["sentence_ids"][row] == s
            row += 1
        first_row = row - len(spans)
        assert len(chosen[s]) == len(by_id[s]) == len(sentence.words)
        for w, (word, offset) in enumerate(zip(sentence.words, offsets, strict=True)):
            assert by_id[s][w] == str(pieces[w][0]), (word, by_id[s][w])  # its own first piece
            r, c = (int(x) for x in chosen[s][w].split(":"))
            best = _expected_window(spans, int(offset))
            assert (r, c) == (first_row + best, offset - spans[best][0] + 1), word
            holding = [i for i, (a, n) in enumerate(spans) if a <= offset < a + n]
            first_losers += best != holding[0]
            last_losers += best != holding[-1]
            past_the_cut += offset >= room
    assert row == rows
    assert past_the_cut > 100  # words the training rows cut (once predicted O)
    assert max(len(_pieces(tokenizer, w)) for w in sentences[-2].words) > room
    if stride < room:  # overlaps: neither the first nor the last window always wins
        assert first_losers > 10 and last_losers > 10, (first_losers, last_losers)
    gold = np.where(features["label"] >= 0, features["label"], 0)
    assert ner.predictions_to_tags(gold, features, sentences, labels) == [s.tags for s in sentences]


def test_window_stride_out_of_range_is_refused(tokenizer):
    sentence = ner.Sentence(["a", "b"], ["O", "O"])
    for stride in (-1, 15):
        with pytest.raises(UserError, match=rf"window_stride={stride} \(config.window_stride\) "
                           r"must be 1 to max_seq_length - 2 = 14 sub-tokens, or 0"):  # fmt: skip
            ner.window_features([sentence], ["O"], tokenizer, 16, stride)
    long = ner.Sentence(["a"] * 30, ["O"] * 30)  # 0: windows half a window (7) apart
    assert _same(ner.window_features([long], ["O"], tokenizer, 16, 0),
                 ner.window_features([long], ["O"], tokenizer, 16, 7))  # fmt: skip


def test_count_cut_counts_words_past_the_training_cut(shared_data, tokenizer):
    sentences = ner.read_conll(shared_data / "conll2003" / "train.txt")[:2000]
    labels = ner.label_list(sentences)
    features = ner.convert_sentences_to_features(sentences, labels, tokenizer, 32)
    lost = []
    for sentence in sentences:
        offsets = np.cumsum([0, *[len(_pieces(tokenizer, w)) for w in sentence.words]])[:-1]
        lost.append(int((offsets >= 30).sum()))
    expected = (sum(n > 0 for n in lost), sum(lost))
    assert expected[0] > 50
    assert ner.count_cut(sentences, features) == expected


# ---------------------------------------------------------------------------------------------
# The job


def test_job_reads_tag_column_warns_of_cut_words_and_scores_every_word(
    shared_data, tiny_hf, tmp_path, caplog
):
    """CoNLL-2003 laid out `word POS NER chunk`: refused with the field to set, then trained
    with config.tag_column=2 at max_seq_length 24: one warning with the counts of the training
    words cut, and a prediction for every validation word."""
    data = tmp_path / "conll"
    data.mkdir()
    for split in ("train", "valid"):
        _swap_last_columns(shared_data / "conll2003" / f"{split}.txt", data / f"{split}.txt",
                           limit=2000)  # fmt: skip
    config = quick(ner_config.get_config(), tiny_hf, steps=2, seq=24, train_limit=64,
                   eval_limit=40)  # fmt: skip
    config.data_dir = str(data)
    with pytest.raises(UserError, match=r"train.txt:3: .*set config.tag_column=2$"):
        ner_job.run(config, str(tmp_path / "refused"))
    config.tag_column, config.window_stride = 2, 8
    caplog.set_level(logging.WARNING)
    results = ner_job.run(config, str(tmp_path / "run"))

    train = ner.read_conll(data / "train.txt", tag_column=2)[:64]
    tok = tokenizers.load_tokenizer(tiny_hf / "vocab.txt")
    cut = [sum(o >= 22 for o in np.cumsum([0, *[len(_pieces(tok, w)) for w in s.words]])[:-1])
           for s in train]  # fmt: skip
    expected = (
        f"{sum(n > 0 for n in cut)} of 64 training sentences exceed max_seq_length=24 ([CLS] "
        f"and [SEP] included): {sum(cut)} words were cut and train nothing"
    )
    warnings = [r.getMessage() for r in caplog.records if "training sentences" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(expected), (warnings, expected)
    assert sum(cut) > 0
    valid = ner.read_conll(data / "valid.txt", tag_column=2)[:40]
    blocks = (tmp_path / "run" / "predictions" / "valid.txt").read_text().strip("\n").split("\n\n")
    assert [[line.split(" ")[:2] for line in b.split("\n")] for b in blocks] == [
        [[w, t] for w, t in zip(s.words, s.tags, strict=True)] for s in valid
    ]
    assert {"f1_PER", "f1_LOC"} <= set(results["valid"]) and "f1_NP" not in results["valid"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
