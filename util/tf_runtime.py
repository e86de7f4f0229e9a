"""TensorFlow as this project uses it: tf.data and TFDS on the host, never the accelerator.

Only the jobs that read data with TensorFlow load it (pre-training, GLUE from TFDS); fine-tuning
on files, STS and sentence-embedding training run without it.
"""

from typing import Any


def load() -> Any:
    """TensorFlow, with the GPUs hidden from it so that tf.data never takes the accelerator's
    memory from JAX. Call before TensorFlow runs an op; calling it again is free."""
    import tensorflow as tf  # noqa: PLC0415 (heavy; most jobs never need it)

    tf.config.set_visible_devices([], "GPU")
    return tf
