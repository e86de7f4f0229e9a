"""TensorFlow as this project uses it: tf.data and TFDS on the host, never the accelerator.

Only the jobs that read data with TensorFlow load it (pre-training, GLUE from TFDS); fine-tuning
on files, STS and sentence-embedding training run without it.
"""

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

# What TensorFlow's import loads of Keras ahead of use (its optimizers, to register them for
# loading SavedModels): about 2 s of every start, for a project that never loads a Keras model.
_KERAS_PRELOAD = "keras.src.optimizers"


def load() -> Any:
    """TensorFlow, with the GPUs hidden from it so that tf.data never takes the accelerator's
    memory from JAX. Call before TensorFlow runs an op; calling it again is free."""
    import tensorflow as tf  # noqa: PLC0415 (heavy; most jobs never need it)

    tf.config.set_visible_devices([], "GPU")
    return tf


@contextlib.contextmanager
def without_keras_preload() -> Iterator[None]:
    """Inside, a first import of TensorFlow skips its preload of Keras (TensorFlow ignores the
    ImportError it meets); Keras itself still imports on first use, as before. Does nothing
    once TensorFlow or that module is loaded."""
    if "tensorflow" in sys.modules or _KERAS_PRELOAD in sys.modules:
        yield
        return
    sys.modules[_KERAS_PRELOAD] = None  # the import system's "no such module"
    try:
        yield
    finally:
        if _KERAS_PRELOAD in sys.modules and sys.modules[_KERAS_PRELOAD] is None:
            del sys.modules[_KERAS_PRELOAD]
