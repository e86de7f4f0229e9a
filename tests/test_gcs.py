"""A whole pre-training run with its input and workdir on `gs://`, against a GCS emulator
(gcp-storage-emulator, see `tests/gcs_emulator.py`) started by the test on 127.0.0.1:
preparation, training, Orbax checkpoints, SIGTERM and resume, TensorBoard events and results,
compared with the same run on local files.

What reaches the emulator: gcsfs (our path layer, `STORAGE_EMULATOR_HOST`), Orbax's own file
handling (etils.epath on fsspec) and TensorStore (`TENSORSTORE_GCS_HTTP_URL`), which writes
the checkpoint arrays. TensorFlow's GCS client cannot be pointed at an emulator (its endpoint
`https://www.googleapis.com/storage/v1/` is compiled in), so nothing of ours goes through it.
"""

import json
import pathlib
import signal
import socket
import subprocess
import sys

import gcsfs
import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

from bert.training import checkpoints
from tests.test_pretrain_job import ROOT, environment, job_args, wait_for

BUCKET = "bucket"
STEPS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def emulator(tmp_path):
    """The emulator's URL, with an empty in-memory bucket `BUCKET`."""
    port = _free_port()
    log = open(tmp_path / "emulator.log", "w")  # noqa: SIM115 (closed below)
    command = [sys.executable, "-m", "tests.gcs_emulator", str(port), BUCKET]
    server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        assert wait_for(listening, 30, server), (tmp_path / "emulator.log").read_text()
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _gcs_environment(url: str) -> dict[str, str]:
    env = environment()
    env["STORAGE_EMULATOR_HOST"] = url  # gcsfs and google-cloud-storage
    env["TENSORSTORE_GCS_HTTP_URL"] = url  # TensorStore (Orbax's array writer)
    # gcsfs's default filesystem first asks the Storage Control gRPC API whether a bucket is
    # zonal; the emulator serves only the JSON API, so that question would time out.
    env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    return env


def _tensorboard_scalars(logdir: pathlib.Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) as TensorBoard's own loader reads them (simple values and tensors)."""
    accumulator = plugin_event_accumulator.EventAccumulator(str(logdir))
    accumulator.Reload()
    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
            for e in accumulator.Tensors(tag)]  # fmt: skip


def test_pretraining_with_input_and_workdir_on_gcs(shared_data, emulator, tmp_path):
    fs = gcsfs.core.GCSFileSystem(endpoint_url=emulator, token="anon")
    wiki = shared_data / "wikipedia" / "AA"
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    for name in ("wiki_00", "wiki_01"):
        fs.put_file(str(wiki / name), f"{BUCKET}/corpus/AA/{name}")
    fs.put_file(str(vocab), f"{BUCKET}/vocab/vocab.txt")
    remote_settings = {
        "data.input": f"gs://{BUCKET}/corpus/*/wiki_0*",
        "data.tokenizer": f"gs://{BUCKET}/vocab/vocab.txt",
        "data.num_shards": 2,
        "train.checkpoint_every": 1000,
    }
    local_settings = remote_settings | {
        "data.input": f"{wiki}/wiki_00,{wiki}/wiki_01",
        "data.tokenizer": str(vocab),
    }
    workdir = f"gs://{BUCKET}/runs/tiny"
    env = _gcs_environment(emulator)

    # Interrupted at step 3 or later by SIGTERM (a checkpoint is saved), then resumed.
    args = job_args(shared_data, workdir, steps=STEPS, **remote_settings)
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)
        assert wait_for(lambda: f"step 3/{STEPS}" in log_path.read_text(), 240, process), (
            log_path.read_text()[-3000:]
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, log_path.read_text()[-3000:]
    assert fs.exists(f"{BUCKET}/runs/tiny/data/manifest.json")
    saved = [int(p.rsplit("/", 1)[1]) for p in fs.ls(f"{BUCKET}/runs/tiny/checkpoints")
             if p.rsplit("/", 1)[1].isdigit()]  # fmt: skip
    assert len(saved) == 1 and 3 <= saved[0] < STEPS, saved
    resumed = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {saved[0]}" in resumed.stderr
    assert "already prepared" in resumed.stderr

    # The same run on local files, uninterrupted.
    reference = tmp_path / "reference"
    done = subprocess.run(job_args(shared_data, reference, steps=STEPS, **local_settings),
                          cwd=ROOT, env=environment(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    # Everything the run wrote lies in the bucket; a copy is read with the libraries' readers.
    copy = tmp_path / "copy"
    fs.get(f"{BUCKET}/runs/tiny/", str(copy), recursive=True)
    assert not (ROOT / "gs:").exists()
    want, _ = checkpoints.load_params(reference)
    got, meta = checkpoints.load_params(copy)
    assert meta["step"] == STEPS
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    losses = _tensorboard_scalars(copy, "train/loss")
    assert losses == _tensorboard_scalars(reference, "train/loss")
    assert [s for s, _ in losses] == list(range(1, STEPS + 1))
    assert _tensorboard_scalars(copy, "eval/mlm_accuracy")
    results = json.loads((copy / "eval_results.json").read_text())
    assert results == json.loads((reference / "eval_results.json").read_text())
    manifest = json.loads((copy / "data" / "manifest.json").read_text())
    local_manifest = json.loads((reference / "data" / "manifest.json").read_text())
    assert manifest["counts"] == local_manifest["counts"]
    assert [i["path"] for i in manifest["inputs"]] == [
        f"gs://{BUCKET}/corpus/AA/wiki_00", f"gs://{BUCKET}/corpus/AA/wiki_01"]  # fmt: skip
    for shard in manifest["shards"]:
        local = reference / "data" / shard["name"]
        assert (copy / "data" / shard["name"]).read_bytes() == local.read_bytes()
