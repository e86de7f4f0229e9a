"""fill-mask equals transformers' pipeline("fill-mask") on the same random-weight checkpoint."""

import logging
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from bert import fill_mask, pretrained
from bert.finetuning import finetune

SENTENCES = ["Paris is the [MASK] of France.", "The [MASK] sat on the [MASK] all day."]


def save_checkpoint(architecture: str, vocab: pathlib.Path, directory: pathlib.Path):
    """A tiny random `architecture` (BertForPreTraining; BertForMaskedLM, without a pooler, the
    most common masked-LM checkpoint) over the uncased vocabulary, with an output bias spread
    wide enough that the top fillers are far apart (no near-ties to reorder)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64)  # fmt: skip
    model = getattr(transformers, architecture)(config).eval()
    with torch.no_grad():
        model.cls.predictions.bias.copy_(3.0 * torch.randn(config.vocab_size))
    model.save_pretrained(directory)
    shutil.copyfile(vocab, directory / "vocab.txt")
    return directory


@pytest.fixture(scope="module", params=["BertForPreTraining", "BertForMaskedLM"])
def checkpoint(shared_data, tmp_path_factory, request):
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    return save_checkpoint(request.param, vocab, tmp_path_factory.mktemp(request.param))


def test_fillers_and_probabilities_equal_the_pipeline(checkpoint):
    ours = fill_mask.fill_mask(pretrained.load(str(checkpoint)), SENTENCES, top_k=5)
    pipe = transformers.pipeline("fill-mask", model=str(checkpoint), top_k=5, framework="pt")
    for sentence, got in zip(SENTENCES, ours, strict=True):
        want = pipe(sentence)
        want = [want] if isinstance(want[0], dict) else want  # one list per mask
        assert len(got) == len(want) == sentence.count("[MASK]")
        for got_mask, want_mask in zip(got, want, strict=True):
            assert [f.token_id for f in got_mask] == [w["token"] for w in want_mask]
            assert [f.token for f in got_mask] == [w["token_str"] for w in want_mask]
            np.testing.assert_allclose([f.score for f in got_mask],
                                       [w["score"] for w in want_mask], atol=1e-5)  # fmt: skip


def test_cli_prints_fillers_and_names_bad_input(shared_data, tmp_path):
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    checkpoint = save_checkpoint("BertForPreTraining", vocab, tmp_path / "checkpoint")
    model = pretrained.load(str(checkpoint))
    best = fill_mask.fill_mask(model, SENTENCES[:1], top_k=1)[0][0][0]
    args = [sys.executable, "-m", "bert.fill_mask", str(checkpoint), SENTENCES[0], "--top_k=3"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"mask 1: {best.token} {best.score:.4f}" in result.stdout
    bad = subprocess.run(args[:3] + [str(checkpoint), "no mask here"], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "error: no [MASK] in 'no mask here'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_fine_tuning_from_a_masked_lm_says_its_pooler_starts_afresh(checkpoint, caplog):
    caplog.set_level(logging.INFO)
    encoder = finetune.load_encoder(str(checkpoint), "", {})
    said = [r.getMessage() for r in caplog.records if "has no" in r.getMessage()]
    if "BertForMaskedLM" in str(checkpoint):
        assert said == [f"{checkpoint} has no pooler, next-sentence head (fine-tuning starts a "
                        "missing pooler from random weights)"]  # fmt: skip
        assert "pooler" not in encoder.encoder
    else:
        assert said == [] and "pooler" in encoder.encoder
