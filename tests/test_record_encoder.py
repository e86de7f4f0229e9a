"""The TensorFlow-free record writer gives what TensorFlow itself writes and parses."""

import os
import random

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import record_encoder, records


def _crc32c_bitwise(data: bytes) -> int:
    """CRC-32C straight from its definition (reflected polynomial 0x82F63B78)."""
    register = 0xFFFFFFFF
    for byte in data:
        register ^= byte
        for _ in range(8):
            register = (register >> 1) ^ (0x82F63B78 if register & 1 else 0)
    return register ^ 0xFFFFFFFF


@pytest.fixture(scope="module")
def crc() -> record_encoder.Crc32c:
    return record_encoder.Crc32c()


def test_crc32c_known_values(crc):
    # Published check values of CRC-32C (RFC 3720 appendix B.4 and the "123456789" check).
    assert crc([b"123456789"]).tolist() == [0xE3069283]
    assert crc([bytes(32), b"\xff" * 32]).tolist() == [0x8A9136AA, 0x62A8AB43]
    assert crc([bytes(range(32))]).tolist() == [0x46DD794E]
    assert crc([b""]).tolist() == [0]


def test_crc32c_equals_the_definition_at_every_length(crc):
    rng = random.Random(0)
    # Around the block (64), level (4 KiB, 256 KiB) boundaries, tiny messages, and random ones.
    lengths = [0, 1, 2, 3, 4, 5, 63, 64, 65, 4095, 4096, 4097, 262_143, 262_144, 262_145]
    lengths += [rng.randrange(20_000) for _ in range(40)]
    messages = [rng.randbytes(n) for n in lengths]
    got = crc(messages).tolist()
    assert got == [_crc32c_bitwise(m) for m in messages]


def test_frames_are_byte_identical_to_tf_writer(tmp_path, crc):
    rng = random.Random(1)
    payloads = [rng.randbytes(n) for n in (0, 1, 7, 100, 70_000, 300_000)] + [os.urandom(33)]
    path = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for payload in payloads:
            writer.write(payload)
    assert b"".join(record_encoder.frame_records(payloads, crc)) == path.read_bytes()


def test_varints_match_protobuf_encoding():
    values = np.array([0, 1, 127, 128, 300, 16_383, 16_384, 2**21, 2**35 + 5, 2**63 - 1])
    encoded, sizes = record_encoder.varints(values)
    expected = tf.train.Int64List(value=values.tolist()).SerializeToString()
    assert b"\x0a" + bytes([len(encoded)]) + encoded.tobytes() == expected
    assert sizes.tolist() == [1, 1, 1, 2, 2, 2, 3, 4, 6, 9]
    with pytest.raises(ValueError, match="non-negative"):
        record_encoder.varints(np.array([3, -1]))


def test_documents_parse_like_records_encode_document():
    rng = random.Random(2)
    documents = []
    for _ in range(60):
        sentences = [
            [
                rng.randrange(2 ** rng.choice([3, 7, 15, 22, 30]))
                for _ in range(rng.randrange(1, 40))
            ]
            for _ in range(rng.randrange(1, 6))
        ]
        starts = [[rng.random() < 0.7 for _ in s] for s in sentences]
        documents.append((sentences, starts))
    ids = np.array([t for doc, _ in documents for s in doc for t in s])
    starts = np.array([w for _, flags in documents for s in flags for w in s])
    lengths = np.array([len(s) for doc, _ in documents for s in doc])
    per_document = np.array([len(doc) for doc, _ in documents])
    encoded = record_encoder.encode_documents(ids, starts, lengths, per_document)
    for ours, (sentences, flags) in zip(encoded, documents, strict=True):
        theirs = records.encode_document(sentences, flags)
        assert tf.train.Example.FromString(ours) == tf.train.Example.FromString(theirs)
        decoded = records.decode_document(ours)
        assert decoded["token_ids"].tolist() == [t for s in sentences for t in s]
    parsed = records.parse_documents(tf.constant(encoded))
    assert parsed["sentence_lengths"].to_list() == [[len(s) for s in d] for d, _ in documents]


def test_bad_document_batches_are_refused():
    with pytest.raises(ValueError, match="positive"):
        record_encoder.encode_documents(np.array([1]), np.array([1]), [1, 0], [2])
    with pytest.raises(ValueError, match="disagree"):
        record_encoder.encode_documents(np.array([1, 2]), np.array([1]), [2], [1])


def test_shard_pattern_is_the_records_one():
    assert record_encoder.SHARD_PATTERN == records.SHARD_PATTERN
