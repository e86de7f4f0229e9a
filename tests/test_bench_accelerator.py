"""bench/accelerator.py, the one-call accelerator benchmark, runs end to end on CPU with a tiny
model and writes its table as JSON, with TensorFlow and ml_collections unimportable (the
GPU machine it is made for has none of them)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.full  # the full tier (tests/conftest.py)

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCKED = ("tensorflow", "tensorflow_datasets", "ml_collections")
RUNNER = f"""
import runpy, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Blocked())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_accelerator_benchmark_runs_on_cpu_without_tf_and_writes_json(tmp_path):
    out = tmp_path / "table.json"
    command = [sys.executable, "-c", RUNNER, str(ROOT / "bench" / "accelerator.py"),
               "--size=tiny", "--steps=2", "--warmup=1", "--peak_flops=1e13",
               f"--json={out}"]  # fmt: skip
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300,
                            cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads(out.read_text())
    assert table["backend"] == "cpu" and table["size"] == "tiny" and table["dtype"] == "float32"
    rows = {(r["part"], r["setting"]): r for r in table["rows"]}
    assert all("error" not in r for r in rows.values()), [r.get("error") for r in rows.values()]
    for seq in (128, 512):
        for part in ("pretrain ours", "pretrain HF torch"):
            row = rows[(part, f"seq {seq}, {'sdpa' if 'torch' in part else 'xla attention'}")]
            assert row["sequences_per_s"] > 0 and 0 < row["mfu"] < 1, row
            # MFU is the achieved FLOP/s over the --peak_flops given.
            assert abs(row["mfu"] - row["tflops_per_s"] * 1e12 / 1e13) < 1e-9
    modern = rows[("pretrain ModernBERT", "seq 512, MLM 30%, xla attention")]
    assert modern["sequences_per_s"] > 0 and 0 < modern["mfu"] < 1, modern
    padded = rows[("finetune SST-2 shape", "padded to 128")]
    bucketed = rows[("finetune SST-2 shape", "buckets of 32")]
    assert padded["shapes"] == 1 and bucketed["shapes"] >= 1
    assert bucketed["padding_fraction"] < padded["padding_fraction"]
    assert rows[("encode", "buckets of 16")]["sentences_per_s"] > 0
    assert "| pretrain ours | seq 128, xla attention |" in result.stdout
