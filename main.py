"""Entry point: python main.py --config=configs/bert_base.py --workdir=DIR

Loads the ml_collections config (locked: a misspelt override is an error), keeps TensorFlow
(used only by tf.data) off the accelerators, joins a multi-host job when asked, and runs the
job named by `config.task`.
"""

import importlib
import logging as py_logging

from absl import app, flags, logging
from ml_collections import config_flags

from input_pipeline import paths

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/bert_base.py:size=mini.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-host job (automatic on TPU VMs and SLURM)."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, where not automatic."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in the job.")
flags.mark_flags_as_required(["config", "workdir"])

# config.task -> its job module in bert/jobs/, whose run(config, workdir) is called.
TASKS = ("pretrain", "glue", "squad", "ner", "sts")


def _library_info_filter(record: py_logging.LogRecord) -> bool:
    """Drops Orbax's per-save INFO chatter; its warnings and errors still show."""
    return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_library_info_filter)
    paths.use_fsspec_backend()  # gs:// and hf:// through fsspec, also inside Orbax
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # tf.data must not take the accelerator from JAX
    import jax

    if _DISTRIBUTED.value or _COORDINATOR.value:
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    logging.info("process %d of %d, %d devices", jax.process_index(), jax.process_count(),
                 jax.device_count())  # fmt: skip
    config = _CONFIG.value
    if config.task not in TASKS:
        raise app.UsageError(f"config.task {config.task!r} is not one of {', '.join(TASKS)}")
    importlib.import_module(f"bert.jobs.{config.task}").run(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
