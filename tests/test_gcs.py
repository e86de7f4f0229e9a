"""A whole pre-training run with its input and workdir on `gs://`, against a GCS emulator
(gcp-storage-emulator, see `tests/gcs_emulator.py`) started by the test on 127.0.0.1:
preparation, training, Orbax checkpoints, SIGTERM and resume, TensorBoard events and results,
compared with the same run on local files.

What reaches the emulator: gcsfs (our path layer, `STORAGE_EMULATOR_HOST`), Orbax's own file
handling (etils.epath on fsspec) and TensorStore (`TENSORSTORE_GCS_HTTP_URL`), which writes
the checkpoint arrays. TensorFlow's GCS client cannot be pointed at an emulator (its endpoint
`https://www.googleapis.com/storage/v1/` is compiled in), so nothing of ours goes through it.
"""

import base64
import json
import pathlib
import signal
import socket
import subprocess
import sys

import fsspec
import gcsfs
import jax
import numpy as np
import pytest
import tensorflow as tf
from etils.epath import gpath
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

from bert.training import checkpoints
from input_pipeline import prepare, records
from tests.test_pretrain_job import ROOT, environment, job_args, wait_for
from util import atomic, console, paths

pytestmark = pytest.mark.full  # the full tier (tests/conftest.py)

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


@pytest.fixture
def gcs(emulator, monkeypatch):
    """This process's path layer pointed at the emulator; yields an independent gcsfs client.

    (gcsfs's core filesystem: its default one would first ask the Storage Control gRPC API
    whether the bucket is zonal, which the emulator does not serve; see _gcs_environment.)
    """
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    previous = {p: fsspec.get_filesystem_class(p) for p in ("gs", "gcs")}
    for protocol in previous:
        fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)
    gcsfs.core.GCSFileSystem.clear_instance_cache()  # instances remember their endpoint
    try:
        yield gcsfs.core.GCSFileSystem(endpoint_url=emulator, token="anon")
    finally:
        gcsfs.core.GCSFileSystem.clear_instance_cache()
        for protocol, cls in previous.items():
            fsspec.register_implementation(protocol, cls, clobber=True)


def test_object_store_writes_are_all_or_nothing(gcs):
    target = f"gs://{BUCKET}/out/results.json"
    atomic.write_json(target, {"step": 1})
    # More than gcsfs's 5 MiB block, so that the upload has begun when the writer fails.
    payload = np.random.default_rng(0).bytes(6 << 20)
    for path in (target, f"gs://{BUCKET}/out/new.bin"):
        with pytest.raises(RuntimeError, match="failed midway"), atomic.open_atomically(path) as f:
            f.write(payload)
            raise RuntimeError("failed midway")
    assert json.loads(gcs.cat(target.removeprefix("gs://"))) == {"step": 1}
    assert not gcs.exists(f"{BUCKET}/out/new.bin")
    assert [str(p) for p in paths.expand(f"gs://{BUCKET}/*/*.json")] == [target]
    assert paths.expand(f"gs://{BUCKET}/out") == []  # a folder is not a file


def test_records_on_gcs_read_as_tensorflow_wrote_them(gcs, tmp_path):
    local = tmp_path / "shard.tfrecord"
    payloads = [b"", b"x", np.random.default_rng(1).bytes(100_000), b"last"]
    with tf.io.TFRecordWriter(str(local)) as writer:
        for payload in payloads:
            writer.write(payload)
    gcs.put_file(str(local), f"{BUCKET}/records/shard.tfrecord")
    read = list(records.read_framed_records(f"gs://{BUCKET}/records/shard.tfrecord"))
    assert read == [r.numpy() for r in tf.data.TFRecordDataset(str(local))] == payloads


def _gcs_environment(url: str) -> dict[str, str]:
    env = environment()  # with the test processes' JAX compilation cache (tests/conftest.py)
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
        assert process.wait(timeout=120) == console.STOPPED_STATUS, log_path.read_text()[-3000:]
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
    accumulator = plugin_event_accumulator.EventAccumulator(str(copy))
    accumulator.Reload()
    assert accumulator.PluginTagToContent("hparams")  # the run's config, written once
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


@pytest.fixture
def fsspec_epath(monkeypatch):
    """epath on fsspec for `gs://` in this test only, as `paths.use_fsspec_backend` makes it in
    the entry points. epath checks that once per process (a cached function), so the check is
    forgotten on the way in and on the way out."""
    monkeypatch.setenv("EPATH_USE_TF", "false")
    gpath._is_tf_installed.cache_clear()
    yield
    gpath._is_tf_installed.cache_clear()  # before monkeypatch restores the variable


def test_a_damaged_shard_in_a_bucket_is_rewritten_alone(gcs, fsspec_epath, shared_data):
    """Checksums on GCS come from the objects' metadata (no download); a truncated shard and
    one with a flipped byte are each rewritten alone, byte-identical, the others untouched."""
    wiki = str(shared_data / "wikipedia" / "AA" / "wiki_00")
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    out = f"gs://{BUCKET}/prepared"
    manifest = prepare.prepare(wiki, out, "wikiextractor", vocab, num_shards=3, workers=0)
    keys = [f"{BUCKET}/prepared/{s['name']}" for s in manifest.shards]
    original = [gcs.cat(key) for key in keys]
    for key, shard in zip(keys, manifest.shards, strict=True):  # GCS's own CRC-32C
        stored = int.from_bytes(base64.b64decode(gcs.info(key)["crc32c"]), "big")
        assert shard["crc32c"] == f"{stored:08x}"
    for damage in (lambda b: b[: len(b) // 2], lambda b: b[:99] + bytes([b[99] ^ 1]) + b[100:]):
        gcs.pipe(keys[1], damage(original[1]))
        generations = {k: gcs.info(k)["generation"] for k in keys}
        repaired = prepare.prepare(wiki, out, "wikiextractor", vocab, num_shards=3, workers=0)
        gcs.invalidate_cache()
        assert repaired == manifest
        assert [gcs.cat(key) for key in keys] == original
        assert gcs.info(keys[1])["generation"] != generations[keys[1]]
        assert all(gcs.info(k)["generation"] == generations[k] for k in (keys[0], keys[2]))
