"""bench/embeddings.py runs end to end on tiny settings (so it cannot rot): our training and
STS scoring, and both sides' encoding. (The sentence-transformers trainer side needs
`datasets` and `accelerate`, which the test requirements leave out; see the script.)"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
import transformers

pytestmark = pytest.mark.full  # the full tier (tests/conftest.py)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def bench(*flags: str) -> list[list[str]]:
    """The rows of the script's table, as lists of cells."""
    command = [sys.executable, str(ROOT / "bench" / "embeddings.py"), *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env=dict(os.environ, XLA_FLAGS=""))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_bench_runs_on_tiny_settings(shared_data, tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64)  # fmt: skip
    transformers.BertModel(config).save_pretrained(tmp_path)
    shutil.copyfile(shared_data / "vocab" / "bert-base-uncased-vocab.txt", tmp_path / "vocab.txt")
    model = f"--model={tmp_path}"
    sts, squad, encode = bench(model, "--part=all", "--which=ours", "--steps=2", "--squad_steps=2",
                               "--train_limit=32", "--eval_limit=32", "--held_out_articles=1",
                               "--squad_max_seq_length=32", "--sentences=40",
                               "--encode_batch_size=8", "--mini_batch_size=8")  # fmt: skip
    assert sts[:3] == ["sts", "ours", "2"] and -100 <= float(sts[3]) <= 100, sts
    assert squad[:3] == ["squad", "ours", "2"] and 0 <= float(squad[4]) <= float(squad[5]) <= 1
    assert int(squad[9]) > 100  # the cached loss's run, and its peak memory in MB
    (theirs,) = bench(model, "--part=encode", "--which=st", "--sentences=40",
                      "--encode_batch_size=8")  # fmt: skip
    assert encode[:3] == ["encode", "ours", "40"] and theirs[:3] == ["encode", "st", "40"]
    assert float(encode[6]) > 0 and float(theirs[6]) > 0, (encode, theirs)
