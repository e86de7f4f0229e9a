"""One process of the multi-process training test (run by tests/test_distributed.py).

Usage: python tests/distributed_worker.py PROCESS_ID NUM_PROCESSES PORT DEVICES_PER_PROCESS
Prints the losses of 5 training steps as JSON on the last line.
"""

import json
import os
import sys

process_id, num_processes, port, local_devices = (int(a) for a in sys.argv[1:5])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
if num_processes > 1:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)

import train_helpers  # noqa: E402

from bert.training import sharding  # noqa: E402

mesh, state, train_step, _ = train_helpers.setup((jax.device_count(), 1, 1))
rows = 16 // num_processes
losses = []
for step in range(5):
    batch = train_helpers.synthetic_batch(step)
    local = {k: v[process_id * rows : (process_id + 1) * rows] for k, v in batch.items()}
    state, metrics = train_step(state, sharding.global_batch(local, mesh))
    losses.append(float(metrics["loss"]))
print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(), "losses": losses}))
