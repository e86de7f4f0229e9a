"""One process of the multi-process training tests (run by tests/test_distributed.py).

Usage: python tests/distributed_worker.py PROCESS_ID NUM_PROCESSES PORT DEVICES_PER_PROCESS
Prints as JSON on the last line: the losses of 5 pre-training steps ("losses"), then of one
bi-encoder step with the multiple-negatives ranking loss on a 16-row pair batch, this process
feeding its share of the rows, dropout off ("loss", and the gradient's leaves as "gradients"),
and of the same step cached in 2 mini-batches ("cached_loss", "cached_gradients").
"""

import json
import os
import sys

process_id, num_processes, port, local_devices = (int(a) for a in sys.argv[1:5])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
if num_processes > 1:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)

import train_helpers  # noqa: E402

from bert.training import sharding  # noqa: E402


def local_rows(batch: dict) -> dict:
    """This process's share of a global batch's rows."""
    rows = len(next(iter(batch.values()))) // num_processes
    return {k: v[process_id * rows : (process_id + 1) * rows] for k, v in batch.items()}


result = {"process": jax.process_index(), "devices": jax.device_count(), "losses": []}
mesh, state, train_step, _ = train_helpers.setup((jax.device_count(), 1, 1))
for step in range(5):
    batch = local_rows(train_helpers.synthetic_batch(step))
    state, metrics = train_step(state, sharding.global_batch(batch, mesh))
    result["losses"].append(float(metrics["loss"]))
batch = local_rows(train_helpers.pair_batch(16))
for name, chunks in (("", 0), ("cached_", 2)):
    loss, grads = train_helpers.mnrl_step((jax.device_count(), 1, 1), None, batch,
                                          train_helpers.STILL, chunks)  # fmt: skip
    result[f"{name}loss"] = loss
    result[f"{name}gradients"] = [np.asarray(g).ravel().tolist() for g in jax.tree.leaves(grads)]
print(json.dumps(result))
