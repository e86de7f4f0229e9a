"""Chinese whole-word masking (config.data.word_segmenter=jieba, input_pipeline/word_segmenter.py):
the words are jieba's, and the masking takes all characters of a word or none.

The reference is jieba itself, called here on the text of the masked rows (never through the
project's code): over 10,000 masked rows of ChnSentiCorp reviews, every multi-character word of
a stretch of ideographs between two punctuation marks is masked whole or not at all, while the
same rows masked character by character split thousands of them.
"""

import csv
import json
import re

import jieba
import numpy as np
import pipeline_data
import pytest

from bert.jobs import pretrain
from configs import bert_base
from input_pipeline import batches, pretraining, tokenizers, word_segmenter
from input_pipeline.prepare import prepare
from util.errors import UserError

ROWS = 10_000
BATCH = 100
SEQ_LENGTH = 128
# jieba cuts its input into blocks of these characters before finding words (its re_han_default);
# a token outside them (punctuation) ends a block in the text as in the row.
_BLOCK = re.compile(r"[\u4E00-\u9FD5a-zA-Z0-9+#&._%\-]")


@pytest.fixture(scope="module")
def chinese_records(shared_data, tmp_path_factory):
    """ChnSentiCorp's reviews (whitespace removed: the tokens of a row then show every character
    jieba saw between two punctuation marks) prepared with jieba's words."""
    with open(shared_data / "chinese" / "ChnSentiCorp_htl_all.csv", encoding="utf-8") as f:
        reviews = ["".join(row["review"].split()) for row in csv.DictReader(f)]
    folder = tmp_path_factory.mktemp("chinese_wwm")
    corpus = folder / "reviews.jsonl"
    corpus.write_text("".join(json.dumps({"text": r}) + "\n" for r in reviews if r), "utf-8")
    vocab = shared_data / "vocab" / "bert-base-chinese-vocab.txt"
    manifest = prepare(corpus, folder / "data", "jsonl", vocab, num_shards=2,
                       word_segmenter="jieba", workers=2)  # fmt: skip
    assert manifest.config["word_segmenter"] == "jieba"
    return manifest.shard_paths, tokenizers.load_tokenizer(vocab)


def _rows(files, tokenizer, whole_word_masking: bool):
    """ROWS masked NSP rows: their unmasked ids and which positions are prediction targets."""
    settings = batches.Settings(seq_length=SEQ_LENGTH, max_predictions_per_seq=20, mode="nsp",
                                whole_word_masking=whole_word_masking)  # fmt: skip
    dataset = pretraining.make_pretraining_dataset(
        [str(f) for f in files], settings, tokenizer.special_ids, batch_size=BATCH, seed=3
    )
    ids, targets = [], []
    for batch in dataset.take(ROWS // BATCH).as_numpy_iterator():
        ids.append(pipeline_data.unmasked(batch))
        chosen = np.zeros(batch["input_ids"].shape, bool)
        for row, (positions, weights) in enumerate(
            zip(batch["masked_lm_positions"], batch["masked_lm_weights"], strict=True)
        ):
            chosen[row, positions[weights > 0]] = True
        targets.append(chosen)
    return np.concatenate(ids), np.concatenate(targets)


def _is_ideograph(token: str | None) -> bool:
    return token is not None and len(token) == 1 and "\u4e00" <= token <= "\u9fd5"


def _is_punctuation(token: str | None) -> bool:
    """A token that ends jieba's block (not [UNK] or another special token: None)."""
    return token is not None and len(token) == 1 and not _BLOCK.match(token)


def _bounded_runs(row: list[str | None]):
    """(start, end) of each stretch of ideographs with punctuation on both sides."""
    start = 0
    while start < len(row):
        end = start
        while end < len(row) and _is_ideograph(row[end]):
            end += 1
        inside = 0 < start < end < len(row)
        if inside and _is_punctuation(row[start - 1]) and _is_punctuation(row[end]):
            yield start, end
        start = end + 1


def _word_counts(ids, chosen, tokenizer) -> dict[str, int]:
    """The multi-character jieba words of every `_bounded_runs` stretch: how many there are, how
    many were masked whole, and how many in part."""
    strings = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    specials = tokenizer.special_ids.all
    counts = {"words": 0, "whole": 0, "partly": 0}
    for row_ids, row_chosen in zip(ids.tolist(), chosen, strict=True):
        row = [strings[i] if i not in specials else None for i in row_ids]
        for start, end in _bounded_runs(row):
            at = start
            for word in jieba.lcut("".join(row[start:end]), HMM=True):
                masked = row_chosen[at : at + len(word)]
                at += len(word)
                if len(word) > 1:
                    counts["words"] += 1
                    counts["whole"] += bool(masked.all())
                    counts["partly"] += bool(masked.any() and not masked.all())
    return counts


def test_whole_word_masking_masks_whole_chinese_words(chinese_records):
    files, tokenizer = chinese_records
    ids, chosen = _rows(files, tokenizer, whole_word_masking=True)
    counts = _word_counts(ids, chosen, tokenizer)
    assert counts["words"] > 100_000, counts  # the check covers most of the text
    assert counts["partly"] == 0, counts
    assert counts["whole"] > 20_000, counts
    candidates = np.isin(ids, list(tokenizer.special_ids.all), invert=True).sum()
    assert 0.14 < chosen.sum() / candidates < 0.16, chosen.sum() / candidates
    # The same rows masked token by token cut words apart: the check above can fail.
    ids, chosen = _rows(files, tokenizer, whole_word_masking=False)
    counts = _word_counts(ids, chosen, tokenizer)
    assert counts["partly"] > 30_000, counts


def test_word_starts_follow_jieba_with_any_tokenizer(shared_data):
    """Tokens after the first of a word of ideographs continue it; the tokenizer's own word
    starts stay elsewhere (an English word's WordPiece parts)."""
    vocab = shared_data / "vocab" / "bert-base-chinese-vocab.txt"
    tokenizer = tokenizers.load_tokenizer(vocab)
    text = "酒店的服务很好，早餐也不错。iPhone6手机 unbelievable"
    (encoding,) = word_segmenter.load("jieba").encode_batch(tokenizer, [text])
    tokens = [tokenizer.id_to_token(i) for i in encoding.ids]
    joined = [
        t if start else "+" + t for t, start in zip(tokens, encoding.word_starts, strict=True)
    ]
    words = [w for w in jieba.lcut(text) if len(w) > 1 and "\u4e00" <= w[0] <= "\u9fd5"]
    assert words == ["酒店", "服务", "早餐", "不错", "手机"]
    assert joined == ["酒", "+店", "的", "服", "+务", "很", "好", "，", "早", "+餐", "也", "不",
                      "+错", "。", "iphone6", "手", "+机", "u", "+##n", "+##bel", "+##ie",
                      "+##va", "+##ble"]  # fmt: skip
    assert encoding.ids == tokenizer.encode_ids(text)


def test_the_segmenter_is_part_of_the_prepared_data(tmp_path, shared_data):
    vocab = shared_data / "vocab" / "bert-base-chinese-vocab.txt"
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("房间很大。早餐不错！\n\n服务一般。\n", "utf-8")
    plain = prepare(corpus, tmp_path / "data", "paragraphs", vocab, num_shards=1, workers=0)
    assert "word_segmenter" not in plain.config  # folders prepared before still match
    segmented = prepare(corpus, tmp_path / "data", "paragraphs", vocab, num_shards=1,
                        word_segmenter="jieba", workers=0)  # fmt: skip
    assert segmented.config["word_segmenter"] == "jieba"
    assert segmented.shards[0]["crc32c"] != plain.shards[0]["crc32c"]


def test_bad_segmenter_settings_are_one_clear_line():
    with pytest.raises(UserError, match=r"^config.data.word_segmenter='thulac': expected one of"):
        word_segmenter.check_name("thulac")
    config = bert_base.get_config("size=tiny")
    config.data.word_segmenter = "jieba"
    with pytest.raises(UserError, match="set --config.data.whole_word_masking=true too"):
        pretrain.corpus(config)
    config.data.whole_word_masking = True
    assert pretrain.corpus(config).word_segmenter == "jieba"
