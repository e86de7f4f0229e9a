"""fill-mask equals transformers' pipeline("fill-mask") on the same random-weight checkpoint, a
padded vocabulary (more embedding rows than tokens) included; a tokenizer with more tokens than
the model's rows is refused in one line."""

import logging
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from bert import fill_mask, pretrained
from bert.finetuning import finetune
from util.errors import UserError

SENTENCES = ["Paris is the [MASK] of France.", "The [MASK] sat on the [MASK] all day."]


def save_checkpoint(
    architecture: str, vocab: pathlib.Path, directory: pathlib.Path, vocab_size: int = 30522
):
    """A tiny random `architecture` (BertForPreTraining; BertForMaskedLM, without a pooler, the
    most common masked-LM checkpoint) over the uncased vocabulary (30,522 tokens; `vocab_size`
    rows of embeddings), with an output bias spread wide enough that the top fillers are far
    apart (no near-ties to reorder)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
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
    assert_fillers_equal_the_pipeline(pretrained.load(str(checkpoint)), checkpoint)


def assert_fillers_equal_the_pipeline(model: pretrained.Pretrained, checkpoint: pathlib.Path):
    ours = fill_mask.fill_mask(model, SENTENCES, top_k=5)
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


def test_a_tokenizer_beyond_the_model_vocabulary_is_refused(shared_data, tmp_path, capsys):
    """A vocab.txt of 30,522 tokens beside (or given for) a model of 30,000 embedding rows: ids
    from 30,000 up would index past the matrix, a silently wrong result. The loader refuses,
    naming both files and sizes and what to do; the CLI says it in one line, exit code 2."""
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    small = save_checkpoint("BertForMaskedLM", vocab, tmp_path / "small", vocab_size=30000)
    said = (f"tokenizer {small / 'vocab.txt'} has 30522 tokens but the model in {small} embeds "
            "only 30000 (its vocab_size): ids from 30000 up would index past its embedding "
            "matrix; give the tokenizer it was trained with")  # fmt: skip
    with pytest.raises(UserError, match=re.escape(said + " (tokenizer=...)")):
        pretrained.load(str(small))
    with pytest.raises(UserError, match=re.escape(said + " (tokenizer=...)")):
        finetune.load_encoder(str(small), "", {})  # what every fine-tuning job calls
    given = tmp_path / "given.txt"
    shutil.copyfile(vocab, given)
    assert fill_mask.main([str(small), SENTENCES[0], f"--tokenizer={given}"]) == 2
    err = capsys.readouterr().err
    assert err == "error: " + said.replace(str(small / "vocab.txt"), str(given)) + (
        " (--tokenizer=...)\n"
    )


def test_a_model_vocabulary_larger_than_the_tokenizer_loads(shared_data, tmp_path):
    """Embedding rows beyond the tokenizer's ids (ModernBERT pads 50,280 pieces to 50,368; here
    30,522 to 30,528, a multiple of 64) are legitimate: the checkpoint loads with its tokenizer,
    and fill-mask over the padded vocabulary equals transformers' pipeline."""
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    padded = save_checkpoint("BertForMaskedLM", vocab, tmp_path / "padded", vocab_size=30528)
    model = pretrained.load(str(padded))
    assert (model.tokenizer.vocab_size, model.config.vocab_size) == (30522, 30528)
    assert model.params["mlm"]["output_bias"].shape == (30528,)
    assert_fillers_equal_the_pipeline(model, padded)
