"""The on-disk format of prepared corpora: one `tf.train.Example` per tokenized document.

Features of each record (all int64 lists):
  token_ids         every token of the document, sentences concatenated, no special tokens
  sentence_lengths  number of tokens of each sentence, in order; sums to len(token_ids)
  word_starts       1 where a token starts a word, else 0; same length as token_ids

Records are written to `shard-NNNNN-of-MMMMM.tfrecord` files beside a `manifest.json`.
"""

import struct
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from util import paths

FEATURES = {
    "token_ids": tf.io.RaggedFeature(tf.int64),
    "sentence_lengths": tf.io.RaggedFeature(tf.int64),
    "word_starts": tf.io.RaggedFeature(tf.int64),
}
SHARD_PATTERN = "shard-{index:05d}-of-{count:05d}.tfrecord"


def _int64_list(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def encode_document(sentences: list[list[int]], word_starts: list[list[bool]]) -> bytes:
    """Serialises one document given per-sentence token ids and per-token word-start flags.

    Args:
      sentences: token ids of each sentence (empty sentences are dropped).
      word_starts: for each sentence, one flag per token.

    Returns:
      A serialised `tf.train.Example`.
    """
    if len(sentences) != len(word_starts):
        raise ValueError(f"{len(sentences)} sentences but {len(word_starts)} word-start lists")
    ids, lengths, starts = [], [], []
    for tokens, flags in zip(sentences, word_starts, strict=True):
        if len(tokens) != len(flags):
            raise ValueError(f"a sentence has {len(tokens)} tokens but {len(flags)} flags")
        if tokens:
            ids.extend(tokens)
            lengths.append(len(tokens))
            starts.extend(int(f) for f in flags)
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "token_ids": _int64_list(ids),
                "sentence_lengths": _int64_list(lengths),
                "word_starts": _int64_list(starts),
            }
        )
    )
    return example.SerializeToString()


def parse_documents(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses a batch (or a scalar) of serialised records into int32 ragged/dense tensors."""
    parsed = tf.io.parse_example(serialized, FEATURES)
    return {k: tf.cast(v, tf.int32) for k, v in parsed.items()}


def decode_document(serialized: bytes) -> dict[str, np.ndarray]:
    """Eager, numpy version of `parse_documents` for one record (tests and tools)."""
    example = tf.train.Example.FromString(serialized)
    return {
        name: np.asarray(example.features.feature[name].int64_list.value, dtype=np.int32)
        for name in FEATURES
    }


def read_framed_records(path: str | bytes) -> Iterator[bytes]:
    """The records of a TFRecord file read through `paths` (for `gs://`/`hf://` shards, where
    `tf.data.TFRecordDataset` would need TensorFlow's own GCS client; see docs/design.md).
    Framing: little-endian uint64 length, its masked CRC32C, the payload, its CRC32C; the CRCs
    are not checked here (object stores check their own).
    """
    name = path.decode() if isinstance(path, bytes) else path
    with paths.open_read(name) as f:
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError(f"{name}: truncated TFRecord header")
            (length,) = struct.unpack("<Q", header[:8])
            payload = f.read(length + 4)
            if len(payload) < length + 4:
                raise ValueError(f"{name}: truncated TFRecord (a {length}-byte record)")
            yield payload[:length]
