"""Golden runs: a fixed tiny pre-training run and a fixed GLUE fine-tuning run from it, through
main.py, give the parameters, metrics and prediction files recorded in tests/golden.json.

The record was made before the layout of the code was reorganised, so a move or rename that
changes any number fails here. On the machine kinds and JAX version it was recorded or
reproduced with (`environments`: an AMD EPYC and an Intel Xeon machine gave the same bytes), the
check is bitwise (a SHA-256 of every parameter's bytes and of the prediction files); elsewhere
XLA may order float sums differently, so it falls back to per-parameter norms within a relative
1e-3 (or an absolute 1e-6: the attention key biases get no gradient, so their norms are rounding
noise of about 1e-9) and metrics within 0.05.

Record anew (only when a change of numbers is intended): GOLDEN_RECORD=1 pytest tests/test_golden.py
"""

import hashlib
import json
import os
import pathlib
import platform
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

from bert.training import checkpoints

pytestmark = pytest.mark.full  # the full tier (tests/conftest.py)

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = pathlib.Path(__file__).with_name("golden.json")


def _environment_key() -> str:
    """What decides bitwise results: JAX's version and the CPU's instruction set."""
    flags = ""
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = [line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")]
        flags = lines[0] if lines else ""
    text = f"{jax.__version__} {platform.machine()} {flags}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(args: list[str]) -> None:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _digest(workdir: pathlib.Path, files: list[str]) -> dict:
    """SHA-256 and per-parameter norms of the newest checkpoint, and hashes of `files`."""
    params, meta = checkpoints.load_params(workdir)
    flat = traverse_util.flatten_dict(params)
    sha = hashlib.sha256()
    norms = {}
    for path in sorted(flat):
        array = np.ascontiguousarray(np.asarray(flat[path], np.float32))
        sha.update("/".join(path).encode())
        sha.update(array.tobytes())
        norms["/".join(path)] = float(np.linalg.norm(array.astype(np.float64)))
    hashes = {name: hashlib.sha256((workdir / name).read_bytes()).hexdigest() for name in files}
    results = json.loads((workdir / "eval_results.json").read_text())
    return {"step": meta["step"], "sha256": sha.hexdigest(), "norms": norms, "files": hashes,
            "results": results}  # fmt: skip


def _flat_numbers(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat_numbers(v, f"{prefix}/{k}")
    else:
        yield prefix, float(value)


def _pretrain_args(shared_data, workdir) -> list[str]:
    wiki = shared_data / "wikipedia" / "AA"
    settings = {
        "data.input": f"{wiki}/wiki_00,{wiki}/wiki_01",
        "data.format": "wikiextractor",
        "data.tokenizer": shared_data / "vocab" / "bert-base-uncased-vocab.txt",
        "data.num_shards": 4,
        "max_seq_length": 64,
        "data.max_predictions_per_seq": 10,
        "model.max_position_embeddings": 64,
        "train.batch_size": 16,
        "train.steps": 8,
        "train.warmup_steps": 2,
        "train.log_every": 4,
        "train.eval_every": 4,
        "train.eval_batches": 2,
        "train.checkpoint_every": 4,
    }
    return ["--config=configs/bert_base.py:size=tiny", f"--workdir={workdir}"] + [
        f"--config.{k}={v}" for k, v in settings.items()
    ]


def _finetune_args(shared_data, workdir, init_from) -> list[str]:
    settings = {
        "init_from": init_from,
        "data_dir": shared_data / "glue" / "SST-2",
        "max_seq_length": 64,
        # Fixed padding, as recorded: length buckets draw dropout masks of other shapes (their
        # equality with fixed padding is tests/test_buckets.py's).
        "pad_to_multiple_of": 0,
        "train.group_by_length": 0,  # plain random batches, as recorded
        "model.initializer": "truncated_normal",  # the classifier's draw, as recorded
        "train_limit": 64,
        "eval_limit": 32,
        "eval_batch_size": 16,
        "train.batch_size": 16,
        "train.steps": 6,
        "train.checkpoint_every": 3,
        "train.log_every": 3,
    }
    return ["--config=configs/glue.py:task=sst2", f"--workdir={workdir}"] + [
        f"--config.{k}={v}" for k, v in settings.items()
    ]


def _compare(name: str, got: dict, want: dict, bitwise: bool) -> None:
    assert got["step"] == want["step"], name
    got_numbers = dict(_flat_numbers(got["results"]))
    want_numbers = dict(_flat_numbers(want["results"]))
    assert got_numbers.keys() == want_numbers.keys(), name
    assert got["norms"].keys() == want["norms"].keys(), name
    if bitwise:
        assert got_numbers == want_numbers, name
        assert got["sha256"] == want["sha256"], f"{name}: parameters differ from the record"
        assert got["files"] == want["files"], f"{name}: prediction files differ from the record"
        return
    for key, value in want_numbers.items():
        assert abs(got_numbers[key] - value) <= 0.05, (name, key)
    for key, value in want["norms"].items():
        assert got["norms"][key] == pytest.approx(value, rel=1e-3, abs=1e-6), (name, key)


def test_golden_pretraining_and_finetuning(shared_data, tmp_path):
    pretrain_dir, finetune_dir = tmp_path / "pretrain", tmp_path / "sst2"
    _run(_pretrain_args(shared_data, pretrain_dir))
    _run(_finetune_args(shared_data, finetune_dir, pretrain_dir))
    environment = _environment_key()
    got = {
        "environments": [environment],
        "pretrain": _digest(pretrain_dir, []),
        "finetune": _digest(finetune_dir, ["predictions/dev.tsv", "predictions/SST-2.tsv"]),
    }
    if os.environ.get("GOLDEN_RECORD"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    bitwise = environment in want["environments"]
    for name in ("pretrain", "finetune"):
        _compare(name, got[name], want[name], bitwise)
