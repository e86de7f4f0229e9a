"""Two processes joined by jax.distributed on 127.0.0.1 (gloo collectives) train like one
process: pre-training, and the ranking loss whose in-batch negatives span both hosts, cached
(bert/finetuning/gradcache.py) or not."""

import json
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
import train_helpers

pytestmark = pytest.mark.full  # the full tier (tests/conftest.py)

WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: pathlib.Path, process_id: int, processes: int, port: int, devices: int):
    """A worker whose output goes to files: a worker blocked on a full pipe would hold the
    others in jax.distributed's shutdown barrier."""
    name = folder / f"{processes}-{process_id}"
    args = [sys.executable, str(WORKER), *map(str, (process_id, processes, port, devices))]
    with open(f"{name}.out", "w") as out, open(f"{name}.err", "w") as err:
        return subprocess.Popen(args, stdout=out, stderr=err), name


def result(worker) -> dict:
    process, name = worker
    process.wait(timeout=300)
    assert process.returncode == 0, pathlib.Path(f"{name}.err").read_text()[-3000:]
    return json.loads(pathlib.Path(f"{name}.out").read_text().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_and_one(tmp_path_factory) -> tuple[dict, dict, dict]:
    """The results of two processes of 2 devices each and of one process of 4 devices, each
    running both tasks (tests/distributed_worker.py)."""
    folder, port = tmp_path_factory.mktemp("distributed"), free_port()
    workers = [start(folder, i, 2, port, 2) for i in range(2)]
    workers.append(start(folder, 0, 1, 0, 4))
    first, second, alone = (result(p) for p in workers)
    assert (first["process"], second["process"]) == (0, 1)
    assert first["devices"] == second["devices"] == alone["devices"] == 4
    return first, second, alone


def test_two_processes_match_one_process(two_and_one):
    first, second, alone = two_and_one
    assert first["losses"] == second["losses"]  # every process sees the global loss
    np.testing.assert_allclose(first["losses"], alone["losses"], rtol=1e-5, atol=0)


def test_ranking_negatives_span_both_processes(two_and_one):
    """Each process feeds 8 of the 16 pairs; the loss and gradient equal one process's over
    all 16 (1e-5, as tests/test_embedding_losses.py), which each process's 8 rows alone miss."""
    first, second, alone = two_and_one
    assert first["loss"] == second["loss"]
    assert abs(first["loss"] - alone["loss"]) <= 1e-5 * alone["loss"], (first, alone)
    for got, want in zip(first["gradients"], alone["gradients"], strict=True):
        want = np.asarray(want)
        bound = 1e-5 * float(np.max(np.abs(want))) + 1e-9
        assert np.max(np.abs(np.asarray(got) - want)) <= bound
    # The test can tell: negatives from each process's own 8 rows give another loss.
    batch = train_helpers.pair_batch(16)
    one_device = jax.devices()[:1]
    halves = [
        train_helpers.mnrl_step(
            (1, 1, 1), one_device, {k: v[rows] for k, v in batch.items()}, train_helpers.STILL
        )[0]
        for rows in (slice(0, 8), slice(8, 16))
    ]
    assert abs(np.mean(halves) - alone["loss"]) > 0.3, (halves, alone["loss"])


def test_the_cached_loss_across_processes_equals_one_process_uncached(two_and_one):
    first, second, alone = two_and_one
    assert first["cached_loss"] == second["cached_loss"]
    assert abs(first["cached_loss"] - alone["loss"]) <= 1e-5 * alone["loss"]
    for got, want in zip(first["cached_gradients"], alone["gradients"], strict=True):
        want = np.asarray(want)
        bound = 1e-5 * float(np.max(np.abs(want))) + 1e-9
        assert np.max(np.abs(np.asarray(got) - want)) <= bound
