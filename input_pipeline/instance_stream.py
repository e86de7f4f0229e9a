"""A host's deterministic, endless stream of unmasked pre-training instances, in batches.

How the stream is made, and why it can be resumed exactly:

1. *Files.* The host takes every `process_count`-th file (file `i` goes to host
   `i % process_count`) when there are at least as many files as hosts; otherwise it reads
   every file and keeps every `process_count`-th record of each. Either way a document belongs
   to exactly one host, always.
2. *Epochs.* Epoch `e` reads the host's files in an order shuffled by (seed, host, e),
   interleaving `files_in_parallel` of them record by record, and cuts the records into blocks
   of `block_documents` documents. Epochs repeat forever; `e` feeds every random choice.
3. *Blocks.* A block is planned (`instances.plan_nsp` / `plan_packed`) from its sentence
   lengths with a `random.Random` keyed on (seed, host, e, block), and its instances are
   shuffled by a permutation keyed the same way. The block is the shuffling unit and the pool
   from which NSP draws its random documents, so memory is bounded by about two blocks (the
   one being emitted, the next one parsed), never by the corpus.
4. *Batches.* Instances are built (`instances.materialize`) a batch at a time and emitted
   block after block; a batch may span two blocks or two epochs. Each example's masking key
   is (host, e, index in the epoch), so masks change every epoch and do not depend on the
   batch size.

The instance work is Python and numpy in one `from_generator` thread (the GIL allows no
more); it makes well over 20,000 sequences/s on one core, more than masking and any model
step on the same machine need (`bench/pipeline_throughput.py`).

Resume: `start_step=N` skips `N * batch_size` instances. Blocks before the one holding that
instance are only *counted*: their records are parsed for `sentence_lengths` alone and planned
(the plan depends on nothing else), with no token parsing, no array work and no masking. Whole
epochs are skipped the same way. The first kept block is then built in full and its first
instances dropped, so the batches are exactly those of an uninterrupted run from step N. The
batch size must be the same as in the interrupted run (the step counts batches of this host).
"""

import atexit
import dataclasses
import hashlib
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from input_pipeline import instances, records, shards
from input_pipeline.batches import PACK_ATTENTIONS, POSITION_KEY, Settings
from input_pipeline.tokenizers import SpecialIds
from util import paths
from util.errors import UserError

MODES = ("nsp", "packed")
PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class _StreamSpec:
    """Everything that decides a host's instance stream (see make_pretraining_dataset)."""

    files: tuple[str, ...]  # this host's files, sorted
    record_shards: int  # >1: keep every record_shards-th record of each file
    record_shard_index: int
    mode: str
    seq_length: int
    short_seq_prob: float
    nsp_random_prob: float
    seed: int
    process_index: int
    block_documents: int
    files_in_parallel: int
    vocab_size: int
    cls_id: int
    sep_id: int
    pad_id: int
    word_starts: bool  # materialise word-start flags (whole-word masking)
    documents: bool  # packed rows get position ids restarting at each document


@dataclasses.dataclass(frozen=True)
class _Block:
    """The planned, shuffled instances of one block, ready to materialise."""

    tokens: np.ndarray  # [T] int32, the block's tokens
    word_starts: np.ndarray | None  # [T] int32
    document_starts: np.ndarray | None  # [T] bool, True on each document's first token
    plan: np.ndarray  # [n, 5] int64, shuffled
    epoch: int
    first_index: int  # index in the epoch of plan row 0
    first_row: int  # rows before it were skipped by a resume


class _ExitGuard:
    """Ends a dataset's Python generators before the interpreter shuts down.

    TensorFlow runs `from_generator` code on its own threads. If the interpreter starts
    finalising while such a call is in flight (an iterator still alive at exit), the call can
    never take the GIL and the iterator's destructor waits for it forever: the process hangs
    (TensorFlow issue 22632). An `atexit` hook, which runs while other threads can still take
    the GIL, tells the generators to stop and waits until none is running.
    """

    def __init__(self):
        self.stop = threading.Event()
        self.live: weakref.WeakSet = weakref.WeakSet()  # generators TensorFlow still holds
        self.running: set[object] = set()  # tokens of generators whose code is running
        self.registered = False

    def track(self, generator: Iterator) -> Iterator:
        if not self.registered:
            atexit.register(self.drain)
            self.registered = True
        self.live.add(generator)
        return generator

    def drain(self, timeout: float = 10.0, quiet: float = 0.2) -> None:
        """Stops the generators; returns once they are released or idle for `quiet` s."""
        self.stop.set()
        start = last_busy = time.monotonic()
        while self.live and time.monotonic() - start < timeout:
            if self.running:
                last_busy = time.monotonic()
            elif time.monotonic() - last_busy > quiet:
                return
            time.sleep(0.005)


def expand_record_files(files: PathLike | Sequence[PathLike]) -> list[str]:
    """Expands globs (local, `gs://`, `hf://`) into a sorted, de-duplicated list of record files.

    Raises:
      UserError: no pattern, or a pattern that matches no file.
    """
    return sorted({os.fspath(p) for p in paths.expand_all(files, "record")})


def _key(*parts: int) -> int:
    """A 128-bit integer derived from integers, for seeding `random.Random` and numpy."""
    data = b"".join(int(p).to_bytes(16, "little", signed=True) for p in parts)
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "little")


def _epoch_files(spec: _StreamSpec, epoch: int) -> list[str]:
    order = np.random.default_rng(_key(spec.seed, spec.process_index, epoch, -1))
    return [spec.files[i] for i in order.permutation(len(spec.files))]


def _serialized_blocks(spec: _StreamSpec, epoch: int, first_block: int) -> tf.data.Dataset:
    """Serialised records of the epoch, in blocks of `block_documents`; string [<=K]."""
    files = _epoch_files(spec, epoch)
    parallel = max(1, min(spec.files_in_parallel, len(files)))
    remote = any(paths.is_remote(f) for f in files)

    def read(path: tf.Tensor) -> tf.data.Dataset:
        if remote:  # read through the path layer (gcsfs, HfFileSystem), see records.py
            dataset = tf.data.Dataset.from_generator(
                records.read_framed_records,
                args=(path,),
                output_signature=tf.TensorSpec((), tf.string),
            )
        else:
            dataset = tf.data.TFRecordDataset(path, buffer_size=1 << 20)
        if spec.record_shards > 1:
            dataset = dataset.shard(spec.record_shards, spec.record_shard_index)
        return dataset

    dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
        read, cycle_length=parallel, block_length=1, num_parallel_calls=parallel
    )
    return dataset.batch(spec.block_documents).skip(first_block)


_PARSED_NAMES = {"sentence_lengths": "lengths", "token_ids": "tokens", "word_starts": "word_starts"}
_SPLITS_NAMES = {
    "sentence_lengths": "splits",
    "token_ids": "token_splits",
    "word_starts": "word_splits",
}


def _parser(features: Sequence[str]) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """Parses a block of serialised records for `features` only, into flat values and splits."""

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, {f: records.FEATURES[f] for f in features})
        out = {}
        for feature, ragged in parsed.items():
            out[_PARSED_NAMES[feature]] = tf.cast(ragged.flat_values, tf.int32)  # [n]
            out[_SPLITS_NAMES[feature]] = ragged.row_splits  # [documents + 1]
        return out

    return parse


def _read_blocks(
    spec: _StreamSpec, epoch: int, first_block: int, lengths_only: bool
) -> Iterator[dict[str, np.ndarray]]:
    """Parsed blocks of the epoch from `first_block` on, as flat arrays plus row splits."""
    features = ["sentence_lengths"]
    if not lengths_only:
        features += ["token_ids", "word_starts"] if spec.word_starts else ["token_ids"]
    dataset = _serialized_blocks(spec, epoch, first_block)
    # parsing is fast: a block at a time; plain TensorFlow code, no AutoGraph conversion needed
    parse = tf.autograph.experimental.do_not_convert(_parser(features))
    dataset = dataset.map(parse).prefetch(1)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options).as_numpy_iterator()


def _check_block(spec: _StreamSpec, block: dict[str, np.ndarray]) -> None:
    """Raises a clear error on records that break the `records` contract."""
    where = f"records of {', '.join(spec.files[:3])}{' ...' if len(spec.files) > 3 else ''}"
    lengths = block["lengths"]
    if lengths.size and lengths.min() <= 0:
        raise UserError(f"malformed {where}: a sentence length is {lengths.min()} (must be > 0)")
    if "tokens" not in block:
        return
    ends = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])[block["splits"]]
    if not np.array_equal(ends, block["token_splits"]):
        raise UserError(f"malformed {where}: sentence_lengths do not sum to the token count")
    if "word_splits" in block and not np.array_equal(block["word_splits"], block["token_splits"]):
        raise UserError(f"malformed {where}: word_starts and token_ids differ in length")
    tokens = block["tokens"]
    if tokens.size and (tokens.min() < 0 or tokens.max() >= spec.vocab_size):
        bad = tokens.max() if tokens.max() >= spec.vocab_size else tokens.min()
        raise UserError(
            f"{where} hold token id {bad}, outside [0, vocab_size={spec.vocab_size}): were "
            "they prepared with another vocabulary?"
        )


def _plan_block(
    spec: _StreamSpec, block: dict[str, np.ndarray], epoch: int, index: int
) -> np.ndarray:
    """The shuffled plan of block `index` of `epoch`; depends on sentence lengths only."""
    splits = block["splits"]
    splits = np.concatenate([splits[:1], splits[1:][np.diff(splits) > 0]])  # no empty documents
    key = _key(spec.seed, spec.process_index, epoch, index)
    if spec.mode == "nsp":
        plan = instances.plan_nsp(
            block["lengths"],
            splits,
            spec.seq_length - 3,
            spec.short_seq_prob,
            spec.nsp_random_prob,
            random.Random(key),
        )
    else:
        plan = instances.plan_packed(block["lengths"], spec.seq_length - 2)
    return plan[np.random.default_rng(key).permutation(len(plan))]


def _document_starts(block: dict[str, np.ndarray]) -> np.ndarray:
    """[T] bool: True on the first token of each (non-empty) document of a parsed block."""
    flags = np.zeros(block["tokens"].size + 1, bool)  # the last slot: ends of empty documents
    flags[block["token_splits"][:-1]] = True
    return flags[:-1]


def _blocks(spec: _StreamSpec, skip: int, stopped: Callable[[], bool]) -> Iterator[_Block]:
    """The host's blocks forever, the first `skip` instances left out (counted, not built)."""
    epoch = 0
    started = time.perf_counter()
    resuming, skipped = skip > 0, skip
    while True:
        first_block, first_index = 0, 0
        if skip:
            for number, lengths in enumerate(_read_blocks(spec, epoch, 0, lengths_only=True)):
                if stopped():
                    return
                _check_block(spec, lengths)
                count = len(_plan_block(spec, lengths, epoch, number))
                if count > skip:
                    first_block = number
                    break
                skip -= count
                first_index += count
            else:
                if first_index == 0:
                    raise UserError(f"process {spec.process_index}: no documents in {spec.files}")
                epoch += 1
                continue
        index = first_index
        blocks = _read_blocks(spec, epoch, first_block, lengths_only=False)
        for number, block in enumerate(blocks, start=first_block):
            _check_block(spec, block)
            plan = _plan_block(spec, block, epoch, number)
            if resuming:
                resuming = False
                logging.info(
                    "input pipeline: skipped %d instances in %.1f s to resume (epoch %d, block %d)",
                    skipped,
                    time.perf_counter() - started,
                    epoch,
                    number,
                )
            word_starts = block["word_starts"] if spec.word_starts else None
            starts = _document_starts(block) if spec.documents else None
            yield _Block(block["tokens"], word_starts, starts, plan, epoch, index, skip)
            index += len(plan)
            skip = 0
        if index == 0:
            raise UserError(f"process {spec.process_index}: no documents in {spec.files}")
        epoch += 1


def _batches(
    spec: _StreamSpec, batch_size: int, skip: int, stopped: Callable[[], bool]
) -> Iterator[dict[str, np.ndarray]]:
    """Unmasked batches: the instance arrays plus `example_keys` int64 [B, 3]."""
    parts: list[dict[str, np.ndarray]] = []
    have = 0
    for block in _blocks(spec, skip, stopped):
        row = block.first_row
        while row < len(block.plan):
            take = min(batch_size - have, len(block.plan) - row)
            part = instances.materialize(
                block.plan[row : row + take],
                block.tokens,
                block.word_starts,
                spec.seq_length,
                spec.cls_id,
                spec.sep_id,
                spec.pad_id,
                pairs=spec.mode == "nsp",
                document_starts=block.document_starts,
            )
            index = block.first_index + np.arange(row, row + take, dtype=np.int64)  # [take]
            keys = np.stack(np.broadcast_arrays(spec.process_index, block.epoch, index), axis=1)
            part["example_keys"] = keys.astype(np.int64)  # [take, 3]
            parts.append(part)
            have += take
            row += take
            if have == batch_size:
                yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                parts, have = [], 0
                if stopped():
                    return


def damaged_shards_error(files: Sequence[str], error: tf.errors.OpError) -> UserError:
    """The error for a record that failed its checksum while read: the shards of `files` whose
    records do not all match their checksums, and what to do."""
    bad = [path for path in files if shards.framed_crc32c(path) is None]
    named = ", ".join(bad) or f"one of {len(files)} shards"
    reason = (str(error.message).strip().splitlines() or ["corrupted record"])[0]
    reason = reason.rsplit("}}", 1)[-1].split(" [Op:")[0].strip()  # without TF's op names
    return UserError(
        f"damaged prepared shard: {named} ({reason}); run again with config.data.verify="
        "checksum (the default), whose start check rewrites it"
    )


def _guarded(
    spec: _StreamSpec, batch_size: int, skip: int, guard: _ExitGuard
) -> Iterator[dict[str, np.ndarray]]:
    """`_batches`, marked running in the guard while its code runs; ends when the guard stops.
    A damaged record becomes a `UserError` naming its shard (see `pretraining.numpy_batches`)."""
    token = object()  # in guard.running while this generator's code runs
    guard.running.add(token)
    try:
        for batch in _batches(spec, batch_size, skip, guard.stop.is_set):
            guard.running.discard(token)
            yield batch
            guard.running.add(token)
    except tf.errors.DataLossError as e:
        raise damaged_shards_error(spec.files, e) from None
    finally:
        guard.running.discard(token)


def _check_sizes(
    mode: str,
    pack_attention: str,
    seq_length: int,
    batch_size: int,
    start_step: int,
    block_documents: int,
    files_in_parallel: int,
) -> None:
    """Raises a UserError on a bad mode, pack attention, sequence length, batch size, step or
    block size."""
    if mode not in MODES:
        raise UserError(f"mode must be one of {MODES}, got {mode!r}")
    if pack_attention not in PACK_ATTENTIONS or (pack_attention != "row" and mode != "packed"):
        raise UserError(f"pack_attention {pack_attention!r} is not one of {PACK_ATTENTIONS} "
                        f"or does not apply to mode {mode!r}")  # fmt: skip
    if seq_length < (5 if mode == "nsp" else 3):
        raise UserError(f"seq_length {seq_length} is too short for mode {mode!r}")
    if batch_size < 1 or start_step < 0 or block_documents < 1 or files_in_parallel < 1:
        raise UserError(
            "batch_size, block_documents and files_in_parallel must be >= 1 and start_step "
            f">= 0; got {batch_size}, {block_documents}, {files_in_parallel}, {start_step}"
        )


def _check_host_and_probabilities(
    process_index: int, process_count: int, short_seq_prob: float, nsp_random_prob: float
) -> None:
    """Raises a ValueError on a host index outside the hosts, or a probability outside [0, 1]."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    for name, value in (("short_seq_prob", short_seq_prob), ("nsp_random_prob", nsp_random_prob)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{name} must be in [0, 1], got {value}")


def _signature(
    batch_size: int, seq_length: int, word_starts: bool, documents: bool
) -> dict[str, tf.TensorSpec]:
    """The `from_generator` output signature of `_batches`."""
    matrix = tf.TensorSpec([batch_size, seq_length], tf.int32)
    signature = {
        "input_ids": matrix,
        "segment_ids": matrix,
        "input_mask": matrix,
        "next_sentence_labels": tf.TensorSpec([batch_size], tf.int32),
        "example_keys": tf.TensorSpec([batch_size, 3], tf.int64),
    }
    if word_starts:
        signature["word_starts"] = matrix
    if documents:
        signature[POSITION_KEY] = matrix
    return signature


def make_instance_dataset(
    files: PathLike | Sequence[PathLike],
    settings: Settings,
    ids: SpecialIds,
    *,
    batch_size: int,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    start_step: int = 0,
    block_documents: int = 1024,
    files_in_parallel: int = 8,
) -> tf.data.Dataset:
    """The endless, deterministic stream of this host's unmasked batches (see the module doc).

    Arguments are those of `pretraining.make_pretraining_dataset` (the masking settings unused,
    but for whole_word_masking: it also yields each token's word-start flag).

    Returns:
      A dataset of dicts: input_ids, segment_ids, input_mask int32 [B, L]; next_sentence_labels
      int32 [B]; example_keys int64 [B, 3] (host, epoch, index in the epoch); word_starts
      int32 [B, L] (1 on special tokens) with whole-word masking; position_ids int32 [B, L]
      with pack_attention "document" (instances.materialize).
    """
    s = settings
    _check_sizes(s.mode, s.pack_attention, s.seq_length, batch_size, start_step, block_documents,
                 files_in_parallel)  # fmt: skip
    _check_host_and_probabilities(process_index, process_count, s.short_seq_prob,
                                  s.nsp_random_prob)  # fmt: skip
    all_files = expand_record_files(files)
    by_file = len(all_files) >= process_count
    word_starts = s.whole_word_masking
    spec = _StreamSpec(
        files=tuple(all_files[process_index::process_count] if by_file else all_files),
        record_shards=1 if by_file else process_count,
        record_shard_index=0 if by_file else process_index,
        mode=s.mode,
        seq_length=s.seq_length,
        short_seq_prob=s.short_seq_prob,
        nsp_random_prob=s.nsp_random_prob,
        seed=seed,
        process_index=process_index,
        block_documents=block_documents,
        files_in_parallel=files_in_parallel,
        vocab_size=ids.vocab_size,
        cls_id=ids.cls,
        sep_id=ids.sep,
        pad_id=ids.pad,
        word_starts=word_starts,
        documents=s.pack_attention == "document",
    )
    guard = _ExitGuard()
    dataset = tf.data.Dataset.from_generator(
        lambda: guard.track(_guarded(spec, batch_size, start_step * batch_size, guard)),
        output_signature=_signature(batch_size, s.seq_length, word_starts, spec.documents),
    )
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)
