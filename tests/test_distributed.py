"""Two processes joined by jax.distributed on 127.0.0.1 train like one process."""

import json
import pathlib
import socket
import subprocess
import sys

import numpy as np

WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_processes_match_one_process():
    port = free_port()
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(i), "2", str(port), "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    single = subprocess.Popen(
        [sys.executable, str(WORKER), "0", "1", "0", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first, second, alone = (result(p) for p in (*workers, single))
    assert (first["process"], second["process"]) == (0, 1)
    assert first["devices"] == second["devices"] == alone["devices"] == 4
    assert first["losses"] == second["losses"]  # every process sees the global loss
    np.testing.assert_allclose(first["losses"], alone["losses"], rtol=1e-5, atol=0)
