"""Entry point: python main.py --config=configs/bert_base.py --workdir=DIR

Loads the ml_collections config (locked: a misspelt override is an error), keeps TensorFlow
(used only by tf.data) off the accelerators, and runs the job named by `config.task`.
"""

import importlib

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/bert_base.py:size=mini.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs.")
flags.mark_flags_as_required(["config", "workdir"])

# config.task -> "module:function(config, workdir)". A job is listed once its module exists.
TASKS: dict[str, str] = {}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # tf.data must not take the accelerator from JAX
    config = _CONFIG.value
    if config.task not in TASKS:
        known = ", ".join(sorted(TASKS)) or "none yet"
        raise app.UsageError(
            f"config.task {config.task!r} is not available in this version (available: {known})"
        )
    module_name, function = TASKS[config.task].split(":")
    getattr(importlib.import_module(module_name), function)(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
