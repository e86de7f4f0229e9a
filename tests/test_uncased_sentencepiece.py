"""config.data.sentencepiece_lowercase: an uncased SentencePiece model trained on the corpus.

Case folding lives in the .model (SentencePiece's nmt_nfkc_cf rule), so our encoder, the
workdir's tokenizer and the exported Hugging Face tokenizer all fold case; the prepared data
is redone when the option changes; without it the model is cased, as before.
"""

import json
import logging

import pytest

from bert.convert import hf_tokenizer
from input_pipeline import prepare, tokenizers
from util.errors import UserError

MIXED = ["The CAT sat on the Mat.", "PARIS is the capital of France!", "the cat sat"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data):
    """Two Wikipedia files as text documents (a sentence per line)."""
    folder = tmp_path_factory.mktemp("corpus")
    documents = [[]]
    for path in sorted((shared_data / "wikipedia" / "AA").glob("wiki_0[01]")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("<doc") or line.startswith("</doc"):
                documents.append([])
            elif line.strip():
                documents[-1].append(line.strip())
    text = "\n\n".join("\n".join(d) for d in documents if d)
    (folder / "wiki.txt").write_text(text + "\n", encoding="utf-8")
    return folder / "wiki.txt"


def _prepare(corpus, out, lowercase: bool | None):
    """prepare() training a 1,000-piece SentencePiece model; lowercase None: the option left out."""
    options = {} if lowercase is None else {"sentencepiece_lowercase": lowercase}
    return prepare.prepare(corpus, out, "text", train_sentencepiece_vocab_size=1000,
                           num_shards=2, workers=0, **options)  # fmt: skip


@pytest.fixture(scope="module")
def uncased(corpus, tmp_path_factory):
    return _prepare(corpus, tmp_path_factory.mktemp("uncased"), True)


def _pieces(tokenizer, text):
    return [tokenizer.id_to_token(i) for i in tokenizer.encode_ids(text)]


def test_uncased_model_folds_case_everywhere(uncased, tmp_path):
    import transformers

    ours = tokenizers.load_tokenizer(uncased.tokenizer_path)
    assert _pieces(ours, "The CAT sat") == _pieces(ours, "the cat sat")
    pieces = [ours.id_to_token(i) for i in range(ours.vocab_size)]
    assert not [p for p in pieces if p.lower() != p and not p.startswith("[")], "capitals"
    # the exported HF tokenizer (tokenizer.json converted from the .model) folds case too
    hf_tokenizer.write_tokenizer(ours, tmp_path, 128)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in MIXED:
        want = ours.build_inputs(ours.encode_ids(text))[0]
        assert theirs(text)["input_ids"] == list(want), text
    assert theirs("The CAT sat")["input_ids"] == theirs("the cat sat")["input_ids"]


def test_cased_model_is_unchanged_and_the_option_redoes_the_data(corpus, uncased, tmp_path,
                                                                 caplog):  # fmt: skip
    out = tmp_path / "data"
    cased = _prepare(corpus, out, None)
    # the option off adds nothing to the recorded settings: folders prepared before still match
    assert "lowercase" not in cased.config["tokenizer"]["train_sentencepiece"]
    assert uncased.config["tokenizer"]["train_sentencepiece"]["lowercase"] is True
    ours = tokenizers.load_tokenizer(cased.tokenizer_path)
    assert _pieces(ours, "The CAT sat") != _pieces(ours, "the cat sat")
    assert cased.fingerprint != uncased.fingerprint
    with caplog.at_level(logging.INFO, logger="input_pipeline.prepare"):
        assert _prepare(corpus, out, False).fingerprint == cased.fingerprint  # reused
        assert not [r for r in caplog.records if r.getMessage().startswith("preparing")]
        again = _prepare(corpus, out, True)  # the option changed: prepared anew, uncased
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("preparing")]
    assert again.fingerprint == uncased.fingerprint
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["fingerprint"] == uncased.fingerprint


def test_option_with_a_given_tokenizer_is_an_error(corpus, shared_data, tmp_path):
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    with pytest.raises(UserError, match="sentencepiece_lowercase is for a SentencePiece model"):
        prepare.prepare(corpus, tmp_path, "text", vocab, sentencepiece_lowercase=True)
