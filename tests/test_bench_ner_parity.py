"""bench/ner_parity.py runs end to end on a tiny model (so it cannot rot), and without dropout
its two sides agree: the same losses step by step, the same tags, the same F1."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.full  # the full tier (tests/conftest.py)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ner_parity_bench_agrees_without_dropout(tiny_hf):
    command = [sys.executable, str(ROOT / "bench" / "ner_parity.py"), f"--model={tiny_hf}",
               "--steps=20", "--batch_size=8", "--train_sentences=160", "--valid_sentences=64",
               "--max_seq_length=64", "--learning_rate=1e-3", "--dropouts=0"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env=dict(os.environ, XLA_FLAGS=""))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert row["last_loss"] < row["first_loss"] - 0.3, row  # it learns: agreement means something
    assert row["max_relative_difference"] < 3e-5, row
    assert row["same_tags"] == 1.0 and row["f1"] == row["hf_f1"], row
