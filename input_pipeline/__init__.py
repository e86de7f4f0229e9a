"""Data pipeline: tokenizers, corpus readers, record preparation and tf.data input."""
