"""Writes the records of `input_pipeline.records` without TensorFlow, vectorised with numpy.

`records.encode_document` builds each `tf.train.Example` through TensorFlow's protobuf classes,
and `tf.io.TFRecordWriter` frames them; importing TensorFlow costs seconds and hundreds of MB
per process, too much for every worker of `prepare`. This module produces the same records with
numpy alone:

* :func:`encode_documents` serialises many documents at once: the varints of every token id
  of a batch are computed in a few array operations, then each document's bytes are sliced out.
  The result parses to the same `tf.train.Example` as `records.encode_document` gives.
* :func:`frame_records` adds the TFRecord framing (length, masked CRC32C of the length, data,
  masked CRC32C of the data), as `tf.io.TFRecordWriter` writes it.
* :class:`Crc32c` computes CRC-32C (Castagnoli) of many messages at once: bytes are grouped in
  blocks whose CRCs come from per-position lookup tables, and block CRCs are combined level by
  level with "shift by n zero bytes" operators (CRC is linear over GF(2)).
"""

import numpy as np

# Equal to records.SHARD_PATTERN (checked by a test); not imported, records imports TensorFlow.
SHARD_PATTERN = "shard-{index:05d}-of-{count:05d}.tfrecord"

_POLY = 0x82F63B78  # CRC-32C, reflected
_MASK_DELTA = 0xA282EAD8  # TFRecord's CRC mask
_U32 = np.uint32


def _feed_zero_byte(registers: np.ndarray, byte_table: np.ndarray) -> np.ndarray:
    """CRC registers after one more zero byte."""
    return byte_table[registers & 0xFF] ^ (registers >> 8)


def _apply(operator: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A linear map of 32-bit values given as 4 byte tables (``operator``: [4, 256])."""
    out = operator[0][values & 0xFF]
    for p in range(1, 4):
        out ^= operator[p][(values >> (8 * p)) & 0xFF]
    return out


class Crc32c:
    """CRC-32C of many byte strings in a few numpy passes.

    Holds lookup tables only (about 1 MB once every level is built); make one per process.
    """

    def __init__(self, block: int = 64, group: int = 64):
        """Builds the tables.

        Args:
          block: bytes per block whose CRC is one table lookup per byte.
          group: blocks (or groups) combined per level; a message of ``n`` bytes needs about
            ``log(n / block) / log(group)`` levels.
        """
        self._block, self._group = block, group
        table = np.arange(256, dtype=_U32)
        for _ in range(8):
            table = np.where(table & 1, (table >> 1) ^ _U32(_POLY), table >> 1).astype(_U32)
        self._byte_table = table  # [256]: a byte fed into a zero register
        # position[j][b]: the CRC contribution of byte b at index j of a block.
        position = np.empty((block, 256), _U32)
        registers = table.copy()
        for distance in range(block):  # bytes after it
            position[block - 1 - distance] = registers
            registers = _feed_zero_byte(registers, table)
        self._position = position
        identity = np.arange(256, dtype=_U32)[None, :] << (8 * np.arange(4, dtype=_U32)[:, None])
        shift = identity.copy()  # [4, 256]: the operator "feed `block` zero bytes"
        for _ in range(block):
            shift = _feed_zero_byte(shift, table)
        self._identity = identity
        self._next_shift = shift
        self._levels: list[np.ndarray] = []  # [group, 4, 256] per level; built on demand

    def _level(self, index: int) -> np.ndarray:
        """Operators shifting by ``d`` units of level ``index``, reversed: row j is d=group-1-j."""
        while len(self._levels) <= index:
            operators = np.empty((self._group + 1, 4, 256), _U32)
            operators[0] = self._identity
            for d in range(1, self._group + 1):
                operators[d] = _apply(self._next_shift, operators[d - 1])
            self._next_shift = operators[self._group]  # one unit of the next level
            self._levels.append(operators[: self._group][::-1].copy())
        return self._levels[index]

    def __call__(self, messages: list[bytes]) -> np.ndarray:
        """Standard CRC-32C (initial and final XOR 0xFFFFFFFF) of each message.

        Returns:
          [len(messages)] uint32.
        """
        count = len(messages)
        lengths = np.fromiter(map(len, messages), np.int64, count)
        blocks = np.maximum(1, -(-lengths // self._block))  # per message, left-padded with zeros
        ends = np.cumsum(blocks) * self._block
        data = np.zeros(int(ends[-1]) if count else 0, np.uint8)
        starts = ends - lengths
        for message, start in zip(messages, starts.tolist(), strict=True):
            data[start : start + len(message)] = np.frombuffer(message, np.uint8)
        # The initial register 0xFFFFFFFF equals inverting the first 4 bytes (from a zero
        # register, which leading zero bytes leave at zero).
        long = lengths >= 4
        data[(starts[long][:, None] + np.arange(4)).ravel()] ^= 0xFF
        values = self._block_crcs(data.reshape(-1, self._block))
        result = self._combine(values, blocks) ^ _U32(0xFFFFFFFF)
        for i in np.flatnonzero(~long).tolist():
            result[i] = self._bytewise(messages[i])
        return result

    def _block_crcs(self, blocks: np.ndarray) -> np.ndarray:
        """[num_blocks, block] uint8 -> [num_blocks] raw CRCs (zero initial register)."""
        out = np.empty(len(blocks), _U32)
        columns = np.arange(self._block)
        step = 1 << 16  # blocks per slice: bounds the [slice, block] uint32 temporary
        for begin in range(0, len(blocks), step):
            lookups = self._position[columns, blocks[begin : begin + step]]
            out[begin : begin + step] = np.bitwise_xor.reduce(lookups, axis=1)
        return out

    def _combine(self, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Per message, the raw CRC of its ``counts[m]`` consecutive units given their CRCs."""
        result = np.empty(len(counts), _U32)
        pending = np.arange(len(counts))
        level = 0
        while len(pending):
            offsets = np.cumsum(counts) - counts
            done = counts == 1
            result[pending[done]] = values[offsets[done]]
            keep = ~done
            values, counts, pending = values[np.repeat(keep, counts)], counts[keep], pending[keep]
            if not len(pending):
                break
            groups = -(-counts // self._group)
            padded_ends = np.cumsum(groups) * self._group
            shift = np.repeat(padded_ends - counts - (np.cumsum(counts) - counts), counts)
            grid = np.zeros(int(padded_ends[-1]), _U32)
            grid[np.arange(len(values)) + shift] = values
            grid = grid.reshape(-1, self._group)
            operators = self._level(level)
            columns = np.arange(self._group)
            combined = operators[columns, 0, grid & 0xFF]
            for p in range(1, 4):
                combined ^= operators[columns, p, (grid >> (8 * p)) & 0xFF]
            values = np.bitwise_xor.reduce(combined, axis=1)
            counts = groups
            level += 1
        return result

    def _bytewise(self, message: bytes) -> int:
        register = 0xFFFFFFFF
        for byte in message:
            register = int(self._byte_table[(register ^ byte) & 0xFF]) ^ (register >> 8)
        return register ^ 0xFFFFFFFF


def masked(crcs: np.ndarray) -> np.ndarray:
    """TFRecord's masking of CRCs: rotate right by 15 bits, add a constant (mod 2**32)."""
    crcs = crcs.astype(np.uint64)
    rotated = ((crcs >> 15) | (crcs << 17)) & 0xFFFFFFFF
    return ((rotated + _MASK_DELTA) & 0xFFFFFFFF).astype(_U32)


def frame_records(payloads: list[bytes], crc: Crc32c) -> list[bytes]:
    """Each payload with its TFRecord framing, as `tf.io.TFRecordWriter` writes it.

    Returns:
      One framed record per payload: length (uint64), masked CRC of the length, the payload,
      masked CRC of the payload (little-endian); a file's bytes are their concatenation.
    """
    if not payloads:
        return []
    headers = np.fromiter(map(len, payloads), np.uint64, len(payloads)).astype("<u8")
    header_bytes = [h.tobytes() for h in headers]
    crcs = masked(crc(header_bytes + payloads)).astype("<u4")
    header_crcs, payload_crcs = crcs[: len(payloads)], crcs[len(payloads) :]
    return [
        b"".join((header, header_crc.tobytes(), payload, payload_crc.tobytes()))
        for header, header_crc, payload, payload_crc in zip(
            header_bytes, header_crcs, payloads, payload_crcs, strict=True
        )
    ]


def varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of non-negative integers.

    Returns:
      (the encodings concatenated as uint8, the number of bytes of each value as int64).
    """
    values = np.asarray(values)
    if values.size and values.min() < 0:
        raise ValueError("varints takes non-negative values only")
    values = values.astype(np.uint64)
    sizes = np.ones(len(values), np.int64)
    for k in range(1, 10):
        sizes += values >= np.uint64(1 << (7 * k))
    ends = np.cumsum(sizes)
    starts = ends - sizes
    out = np.empty(int(ends[-1]) if len(values) else 0, np.uint8)
    for j in range(int(sizes.max()) if len(values) else 0):
        where = sizes > j
        byte = (values[where] >> np.uint64(7 * j)) & np.uint64(0x7F)
        byte |= np.where(sizes[where] > j + 1, np.uint64(0x80), np.uint64(0))
        out[starts[where] + j] = byte
    return out, sizes


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int64_feature(key: bytes, packed: bytes) -> bytes:
    """A ``Features.feature`` map entry holding an Int64List of already packed varints."""
    int64_list = b"\x0a" + _varint(len(packed)) + packed if packed else b""
    feature = b"\x1a" + _varint(len(int64_list)) + int64_list  # Feature.int64_list = 3
    entry = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(feature)) + feature
    return b"\x0a" + _varint(len(entry)) + entry


def encode_documents(
    token_ids: np.ndarray,
    word_starts: np.ndarray,
    sentence_lengths: np.ndarray,
    sentences_per_document: np.ndarray,
) -> list[bytes]:
    """Serialised `tf.train.Example` records (the `records` format) of a batch of documents.

    Args:
      token_ids: [tokens] every token of every document, in order (non-negative).
      word_starts: [tokens] 1 where a token starts a word, else 0.
      sentence_lengths: [sentences] tokens per sentence, documents one after another; zero
        lengths are not allowed (drop empty sentences first, as `records.encode_document` does).
      sentences_per_document: [documents] how many sentences each document has.

    Returns:
      One record per document, parsing to what `records.encode_document` gives.
    """
    sentence_lengths = np.asarray(sentence_lengths, np.int64)
    sentences_per_document = np.asarray(sentences_per_document, np.int64)
    if len(token_ids) != len(word_starts) or len(token_ids) != sentence_lengths.sum():
        raise ValueError("token_ids, word_starts and sentence_lengths disagree on the length")
    if len(sentence_lengths) != sentences_per_document.sum() or (sentence_lengths <= 0).any():
        raise ValueError("sentence lengths must be positive and sum up per document")
    id_bytes, id_sizes = varints(token_ids)
    id_offsets = np.concatenate([[0], np.cumsum(id_sizes)])
    starts_bytes = np.asarray(word_starts, np.uint8)  # 0 and 1 are their own varints
    length_bytes, length_sizes = varints(sentence_lengths)
    length_offsets = np.concatenate([[0], np.cumsum(length_sizes)])
    sentence_bounds = np.concatenate([[0], np.cumsum(sentences_per_document)])
    token_bounds = np.concatenate([[0], np.cumsum(sentence_lengths)])[sentence_bounds]
    records = []
    for d in range(len(sentences_per_document)):
        first_token, end_token = token_bounds[d], token_bounds[d + 1]
        first_sentence, end_sentence = sentence_bounds[d], sentence_bounds[d + 1]
        ids = id_bytes[id_offsets[first_token] : id_offsets[end_token]].tobytes()
        starts = starts_bytes[first_token:end_token].tobytes()
        lengths = length_bytes[length_offsets[first_sentence] : length_offsets[end_sentence]]
        features = (
            _int64_feature(b"word_starts", starts)
            + _int64_feature(b"token_ids", ids)
            + _int64_feature(b"sentence_lengths", lengths.tobytes())
        )
        records.append(b"\x0a" + _varint(len(features)) + features)  # Example.features = 1
    return records
