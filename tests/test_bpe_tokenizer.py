"""A ModernBERT-style byte-level BPE tokenizer.json (trained here on real Wikipedia text, saved
as transformers saves it): our ids, pairs, truncation and offsets equal `AutoTokenizer`'s on
hundreds of real lines, whole-word starts follow the 'Ġ' spaces, fill-mask on a random
`ModernBertForMaskedLM` equals transformers' fill-mask pipeline, and a damaged file is one line."""

import itertools
import json
import pathlib
import pickle
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tokenizers as hf_tokenizers
import torch
import transformers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from bert import fill_mask, pretrained
from bert.convert import hf_tokenizer
from bert.tasks import features, squad
from input_pipeline import bpe_tokenizer, corpora, prepare, records, tokenizers
from util.errors import UserError

VOCAB_SIZE = 3000  # BPE tokens learnt before the special tokens are added
# ModernBERT's special tokens (it adds them after its BPE vocabulary, [MASK] taking the space
# before it); GPT-NeoX's two own tokens open the vocabulary.
SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
NEOX_TOKENS = ("<|endoftext|>", "<|padding|>")
ROBERTA = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0-3; <mask> comes last
TRICKY = [
    "Hello, World! It's 100% naïve café déjà vu (e\u0301 combining).",
    "Literal specials: [MASK] [SEP] [CLS] [PAD] [UNK], and [mask] <s> in text.",
    "東京は日本の首都です。中文 and 한국어, Ελληνικά, русский, emoji 😀👍🏽.",
    "Tabs\tand  double  spaces,\nnewlines\r\n and \u00a0nbsp \u200b zero-width.",
    "A" * 120 + " supercalifragilisticexpialidocious",
    "",
    "   ",
]
SENTENCES = [
    "Paris is the [MASK] of France.",
    "The [MASK] was built in the [MASK] century.",
    "[MASK] is a political philosophy.",
    "He studied at the university of[MASK].",
]


def _lines(data: pathlib.Path, name: str, count: int) -> list[str]:
    """The first `count` paragraphs of a real Wikipedia file (our WikiExtractor reader)."""
    path = data / "wikipedia" / "AA" / name
    documents = corpora.read_corpus(str(path), "wikiextractor", sentence_split=False)
    lines = list(itertools.islice(itertools.chain.from_iterable(documents), count))
    documents.close()
    assert len(lines) == count
    return lines


@pytest.fixture(scope="module")
def lines(shared_data) -> list[str]:
    """Real paragraphs the tokenizer was not trained on."""
    return _lines(shared_data, "wiki_40", 300)


def _train(texts: list[str], specials: tuple[str, ...], lead: tuple[str, ...] = ()):
    """A byte-level BPE as GPT-NeoX / OLMo / ModernBERT have it: NFC, the byte-level
    pre-tokenizer and decoder, `lead` tokens first, `specials` added after the vocabulary."""
    tokenizer = hf_tokenizers.Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=list(lead), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_special_tokens(
        [hf_tokenizers.AddedToken(t, special=True, normalized=False, lstrip="mask" in t.lower())
         for t in specials]
    )  # fmt: skip
    return tokenizer


def _save(tokenizer, directory: pathlib.Path, names: dict[str, str]) -> pathlib.Path:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json as transformers writes
    them for ModernBERT (no token type ids among its inputs)."""
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, **names, clean_up_tokenization_spaces=True,
        model_input_names=["input_ids", "attention_mask"], model_max_length=8192,
    )  # fmt: skip
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def training_text(shared_data) -> list[str]:
    return _lines(shared_data, "wiki_01", 2000) + _lines(shared_data, "wiki_02", 2000)


@pytest.fixture(scope="module")
def modernbert_dir(training_text, tmp_path_factory) -> pathlib.Path:
    tokenizer = _train(training_text, SPECIALS, NEOX_TOKENS)
    ids = {t: tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]")}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=list(ids.items()),
    )  # fmt: skip
    names = dict(cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", pad_token="[PAD]",
                 unk_token="[UNK]")  # fmt: skip
    return _save(tokenizer, tmp_path_factory.mktemp("modernbert_tokenizer"), names)


@pytest.fixture(scope="module")
def roberta_dir(training_text, tmp_path_factory) -> pathlib.Path:
    """RoBERTa's layout: <s> a </s></s> b </s>, its special names, type ids all 0."""
    tokenizer = _train(training_text[:1000], ("<mask>",), ROBERTA)
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>"))
    )
    names = dict(bos_token="<s>", cls_token="<s>", sep_token="</s>", eos_token="</s>",
                 mask_token="<mask>", pad_token="<pad>", unk_token="<unk>")  # fmt: skip
    return _save(tokenizer, tmp_path_factory.mktemp("roberta_tokenizer"), names)


def test_ids_pairs_and_truncation_equal_transformers(modernbert_dir, lines):
    ours = tokenizers.load_tokenizer(modernbert_dir)
    hf = transformers.AutoTokenizer.from_pretrained(modernbert_dir)
    assert isinstance(ours, bpe_tokenizer.BpeTokenizer) and ours.path.name == "tokenizer.json"
    assert ours.vocab_size == len(hf) == VOCAB_SIZE + len(SPECIALS)
    s = ours.special_ids
    assert (s.cls, s.sep, s.mask, s.pad, s.unk) == (hf.cls_token_id, hf.sep_token_id,
        hf.mask_token_id, hf.pad_token_id, hf.unk_token_id)  # fmt: skip
    texts = lines + TRICKY
    want = hf(texts, add_special_tokens=False)["input_ids"]
    assert [e.ids for e in ours.encode_batch(texts)] == want
    for text in texts[:50]:
        assert ours.encode_ids(text) == ours.encode(text).ids
    firsts, seconds = lines[:150], lines[150:]
    for a, b in zip(firsts[:40], seconds, strict=False):
        want = hf(a, b, return_token_type_ids=True)
        assert ours.build_inputs(ours.encode_ids(a), ours.encode_ids(b)) == (
            want["input_ids"], want["token_type_ids"])  # fmt: skip
        assert ours.build_inputs(ours.encode_ids(a))[0] == hf(a)["input_ids"]
    # Cut to 65: singles at the end, pairs longest-first. (An odd room for the pair, 64 - 3,
    # would differ where both texts are long: BERT's rule, ours, cuts the first text on a tie,
    # tokenizers' gives the odd token to the text that was longer.)
    for pair in (None, seconds):
        got = features.encode_texts(ours, firsts, pair, 65)
        want = hf(firsts, pair, truncation=True, max_length=65, padding="max_length")
        np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
        np.testing.assert_array_equal(got["input_mask"], want["attention_mask"])
    assert ours.decode(ours.encode_ids(lines[0])) == hf.decode(hf(lines[0])["input_ids"][1:-1])


def test_roberta_style_file_takes_its_names_and_layout(roberta_dir, lines):
    ours = tokenizers.load_tokenizer(roberta_dir / "tokenizer.json")
    hf = transformers.AutoTokenizer.from_pretrained(roberta_dir)
    s = ours.special_ids
    assert (s.cls, s.sep, s.mask, s.pad, s.unk) == (hf.cls_token_id, hf.sep_token_id,
        hf.mask_token_id, hf.pad_token_id, hf.unk_token_id)  # fmt: skip
    a, b = lines[0], lines[1]
    want = hf(a, b, return_token_type_ids=True)
    assert want["input_ids"].count(hf.sep_token_id) == 3  # <s> a </s></s> b </s>
    got = ours.build_inputs(ours.encode_ids(a), ours.encode_ids(b))
    assert got == (want["input_ids"], want["token_type_ids"])
    got = features.encode_texts(ours, lines[:100], lines[100:200], 48)  # an even room, 48 - 4
    want = hf(lines[:100], lines[100:200], truncation=True, max_length=48, padding="max_length")
    np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
    masked = "The <mask> sat on the mat."
    assert ours.encode_masked(masked.replace("<mask>", "[MASK]")) == hf(
        masked, add_special_tokens=False)["input_ids"]  # fmt: skip


def test_offsets_for_squad_equal_transformers(modernbert_dir, shared_data):
    """SQuAD features carry the character offsets transformers gives (a window's context tokens
    are the context's from the window's start), and each training target covers its answer."""
    ours = tokenizers.load_tokenizer(modernbert_dir)
    hf = transformers.AutoTokenizer.from_pretrained(modernbert_dir)
    path = shared_data / "squad" / "dev-v1.1.json"
    examples = squad.read_squad(path, is_training=True).examples[:200]
    made = squad.make_features(examples, ours, max_seq_length=160, doc_stride=64,
                               max_query_length=32, is_training=True)  # fmt: skip
    assert len(made) > len(examples)  # some contexts take several windows
    next_start: dict[int, int] = {}  # example -> its next window's first context token
    targets = 0
    for feature in made:
        example = examples[feature.example_index]
        want = hf(example.context, add_special_tokens=False, return_offsets_mapping=True)
        context = feature.offsets[:, 0] >= 0  # [max_seq_length]
        start = next_start.get(feature.example_index, 0) if feature.window_index else 0
        length = int(context.sum())
        assert feature.input_ids[context].tolist() == want["input_ids"][start : start + length]
        offsets = [tuple(o) for o in feature.offsets[context].tolist()]
        assert offsets == want["offset_mapping"][start : start + length]
        next_start[feature.example_index] = start + 64  # a doc_stride later
        if feature.start_position:
            begin = feature.offsets[feature.start_position, 0]
            text = example.context[begin : feature.offsets[feature.end_position, 1]]
            assert example.answers[0].text in text and len(text) < len(example.answers[0].text) + 8
            targets += 1
    assert targets >= len(examples)


def test_word_starts_are_the_spaced_words(modernbert_dir, lines):
    """Whole-word masking sees the text's words: a token starting with 'Ġ' (a space before it)
    or a text's first token starts one, so the starts count the whitespace-separated words."""
    ours = tokenizers.load_tokenizer(modernbert_dir)
    plain = [line for line in lines if " ".join(line.split()) == line]
    assert len(plain) > 250
    for line, encoding in zip(plain, ours.encode_batch(plain), strict=True):
        assert sum(encoding.word_starts) == len(line.split()), line
        tokens = [ours.id_to_token(i) for i in encoding.ids]
        assert encoding.word_starts[1:] == [t.startswith("Ġ") for t in tokens[1:]]
    masked = ours.encode("Paris [MASK].")  # the mask token a word, its '.' not
    assert masked.ids[-2] == ours.mask_id and masked.word_starts[-2:] == [True, False]


def test_fingerprint_follows_the_file_and_survives_pickling(modernbert_dir, tmp_path, lines):
    ours = tokenizers.load_tokenizer(modernbert_dir)
    copy = shutil.copytree(modernbert_dir, tmp_path / "copy")
    assert tokenizers.load_tokenizer(copy).fingerprint() == ours.fingerprint()
    data = json.loads((copy / "tokenizer.json").read_text())
    data["model"]["merges"] = data["model"]["merges"][:-1]  # one merge fewer: other ids
    (copy / "tokenizer.json").write_text(json.dumps(data))
    assert tokenizers.load_tokenizer(copy).fingerprint() != ours.fingerprint()
    again = pickle.loads(pickle.dumps(ours))
    assert again.encode_batch(lines[:20]) == ours.encode_batch(lines[:20])
    assert again.fingerprint() == ours.fingerprint()


def _damage(directory: pathlib.Path, edit) -> pathlib.Path:
    data = json.loads((directory / "tokenizer.json").read_text())
    edit(data)
    (directory / "tokenizer.json").write_text(json.dumps(data))
    return directory / "tokenizer.json"


def _drop_mask(data: dict) -> None:
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "[MASK]"]


def _one_line(error: pytest.ExceptionInfo, path: pathlib.Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_damaged_files_are_one_line_naming_them(modernbert_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(modernbert_dir, bad)
    (bad / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')
    with pytest.raises(UserError, match="is not a valid tokenizer.json: ") as e:
        tokenizers.load_tokenizer(bad)
    _one_line(e, bad / "tokenizer.json")
    cases = {
        "lacks the special token(s) [MASK] (nor has it all of <s> </s> <mask> <pad> <unk>)":
            _drop_mask,
        "its post-processor frames one text as 'text'; this project needs '[CLS] text [SEP]'":
            lambda d: d.update(post_processor=None),
        "its post-processor frames one text as 'text [SEP]'": lambda d: d["post_processor"].update(
            single=d["post_processor"]["single"][1:]),
    }  # fmt: skip
    for message, edit in cases.items():
        shutil.copy(modernbert_dir / "tokenizer.json", bad / "tokenizer.json")
        path = _damage(bad, edit)
        with pytest.raises(UserError, match=re.escape(message)) as e:
            tokenizers.load_tokenizer(bad)
        _one_line(e, path)
    shutil.copy(modernbert_dir / "tokenizer.json", bad / "tokenizer.json")
    with pytest.raises(UserError, match="sets its own lower-casing") as e:
        tokenizers.load_tokenizer(bad / "tokenizer.json", lowercase=True)
    with pytest.raises(UserError, match="holds a BPE model, not WordPiece"):
        tokenizers.load_wordpiece(bad / "tokenizer.json")
    (bad / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON") as e:
        tokenizers.load_tokenizer(bad)
    _one_line(e, bad / "tokenizer_config.json")


def test_export_writes_files_transformers_reads_alike(modernbert_dir, tmp_path, lines):
    """HF files written for an export (bert/convert/hf_tokenizer.py): the same ids from
    AutoTokenizer, with the tokenizer_config.json beside the tokenizer.json or, without one, a
    generated one; token_type_ids among the inputs only for a model that takes them."""
    ours = tokenizers.load_tokenizer(modernbert_dir)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(modernbert_dir / "tokenizer.json", alone)
    want = [ours.build_inputs(ids)[0] for ids in ours.encode_batch_ids(lines[:50])]
    cases = [(ours, None, False), (tokenizers.load_tokenizer(alone), None, True),
             (tokenizers.load_tokenizer(alone), False, False), (ours, True, True)]  # fmt: skip
    for number, (source, token_types, has_types) in enumerate(cases):
        out = tmp_path / f"out{number}"
        out.mkdir()
        written = hf_tokenizer.write_tokenizer(source, out, 512, token_types=token_types)
        assert sorted(written) == sorted(p.name for p in out.iterdir())
        hf = transformers.AutoTokenizer.from_pretrained(out)
        assert hf(lines[:50])["input_ids"] == want
        assert hf.model_max_length == 512 and hf.mask_token_id == ours.mask_id
        assert ("token_type_ids" in hf(lines[0], lines[1])) == has_types, number


def test_preparation_records_transformers_ids(modernbert_dir, lines, tmp_path):
    """Pre-training preparation with the tokenizer.json: each sentence's ids are
    AutoTokenizer's, and the manifest records the file's fingerprint."""
    corpus = tmp_path / "corpus.txt"
    documents = [lines[i : i + 3] for i in range(0, 30, 3)]
    corpus.write_text("\n\n".join("\n".join(d) for d in documents) + "\n", encoding="utf-8")
    manifest = prepare.prepare(str(corpus), tmp_path / "out", "text", modernbert_dir,
                               num_shards=1, workers=0)  # fmt: skip
    assert manifest.fingerprint == tokenizers.load_tokenizer(modernbert_dir).fingerprint()
    hf = transformers.AutoTokenizer.from_pretrained(modernbert_dir)
    dataset = tf.data.TFRecordDataset(str(manifest.shard_paths[0])).as_numpy_iterator()
    got = [records.decode_document(r) for r in dataset]
    assert len(got) == len(documents)
    for record, document in zip(got, documents, strict=True):
        want = hf(document, add_special_tokens=False)["input_ids"]
        assert record["token_ids"].tolist() == [i for ids in want for i in ids]
        assert record["sentence_lengths"].tolist() == [len(ids) for ids in want]


@pytest.fixture(scope="module")
def modernbert_mlm(modernbert_dir, tmp_path_factory) -> pathlib.Path:
    """A small random ModernBertForMaskedLM over the tokenizer (its special ids in the config),
    saved with it: local windows of 8 with a global layer every 2, weights drawn wide enough
    that each sentence and mask gets its own fillers (not the output bias's)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(modernbert_dir)
    config = transformers.ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=64, local_attention=8,
        global_attn_every_n_layers=2, pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        initializer_range=0.5, reference_compile=False,
    )  # fmt: skip
    config.mask_token_id = tokenizer.mask_token_id
    torch.manual_seed(0)
    model = transformers.ModernBertForMaskedLM(config).eval()
    directory = tmp_path_factory.mktemp("modernbert_mlm")
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(modernbert_dir / name, directory)
    return directory


def test_fill_mask_equals_the_pipeline(modernbert_mlm, capsys):
    """The top 5 fillers of every [MASK] and their probabilities (within 1e-5), through the
    library and the CLI, equal transformers' fill-mask pipeline on the same directory."""
    model = pretrained.load(str(modernbert_mlm))
    assert isinstance(model.tokenizer, bpe_tokenizer.BpeTokenizer)
    ours = fill_mask.fill_mask(model, SENTENCES, top_k=5)
    eager = {"attn_implementation": "eager"}  # the reference attention, mask by mask
    pipe = transformers.pipeline("fill-mask", model=str(modernbert_mlm), top_k=5,
                                 framework="pt", model_kwargs=eager)  # fmt: skip
    for sentence, got in zip(SENTENCES, ours, strict=True):
        want = pipe(sentence)
        want = [want] if isinstance(want[0], dict) else want  # one list per mask
        assert len(got) == len(want) == sentence.count("[MASK]")
        for got_mask, want_mask in zip(got, want, strict=True):
            assert [f.token_id for f in got_mask] == [w["token"] for w in want_mask]
            assert [f.token for f in got_mask] == [w["token_str"] for w in want_mask]
            np.testing.assert_allclose([f.score for f in got_mask],
                                       [w["score"] for w in want_mask], atol=1e-5)  # fmt: skip
    assert fill_mask.main([str(modernbert_mlm), SENTENCES[0], "--top_k=2"]) == 0
    best = pipe(SENTENCES[0])[:2]
    shown = "  ".join(f"{w['token_str']} {w['score']:.4f}" for w in best)
    assert f"  mask 1: {shown}\n" in capsys.readouterr().out


def test_fill_mask_names_a_damaged_tokenizer_in_one_line(modernbert_mlm, tmp_path, capsys):
    directory = shutil.copytree(modernbert_mlm, tmp_path / "model")
    path = _damage(directory, _drop_mask)
    assert fill_mask.main([str(directory), SENTENCES[0]]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(path) in err and "lacks the special token(s) [MASK]" in err
