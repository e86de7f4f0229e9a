"""One process of the two-process retrieval test (run by tests/test_retrieval.py).

Usage: python tests/retrieval_worker.py PROCESS_ID NUM_PROCESSES PORT DEVICES_PER_PROCESS
Prints the top-10 corpus indices of fixed random queries as JSON on the last line.
"""

import json
import os
import sys

process_id, num_processes, port, local_devices = (int(a) for a in sys.argv[1:5])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
if num_processes > 1:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)

from bert.tasks import retrieval  # noqa: E402

rng = np.random.default_rng(3)
queries = rng.normal(size=(21, 16)).astype(np.float32)
corpus = rng.normal(size=(101, 16)).astype(np.float32)
options = retrieval.RetrievalOptions("cosine", (1,), (10,), (10,), (10,), corpus_chunk=6,
                                     query_chunk=8)  # fmt: skip
_, indices = retrieval.search(queries, corpus, 10, options, retrieval.corpus_mesh())
print(json.dumps({"devices": jax.device_count(), "indices": indices.tolist()}))
