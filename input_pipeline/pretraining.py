"""The pre-training `tf.data` pipeline: host sharding, shuffling, NSP pairs or packing, masking.

`make_pretraining_dataset` is `instance_stream.make_instance_dataset` (the host's endless,
deterministic, resumable stream of unmasked batches: sharding, per-epoch shuffling, NSP pairs
as the original BERT or packed sentences) followed by `masking.mask_tokens` (15% of the tokens,
80/10/10, with a stateless random stream keyed on each example's (host, epoch, index)) in a
parallel `tf.data` map, then prefetching. See those modules for the details.

Throughput on a 2-core CPU and how to measure it: `bench/pipeline_throughput.py`.
"""

import os
import re
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from input_pipeline import instance_stream, masking
from input_pipeline.batches import BATCH_KEYS, POSITION_KEY, Settings
from input_pipeline.tokenizers import SpecialIds
from util.errors import UserError

MODES = instance_stream.MODES
# How TensorFlow passes on a UserError raised in a `from_generator` function: "UserError: "
# and its message, then the generator's traceback.
_USER_ERROR = re.compile(r"\bUserError: (.*?)(?:\nTraceback|\Z)", re.DOTALL)
PathLike = str | os.PathLike


def _masker(
    seed: int,
    max_predictions_per_seq: int,
    special_ids: Sequence[int],
    mask_id: int,
    vocab_size: int,
    mask_rate: float,
    whole_word_masking: bool,
) -> Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]:
    """The `tf.data` map from an unmasked `instance_stream` batch to a masked `BATCH_KEYS` one."""

    def mask(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        masked = masking.mask_tokens(
            batch["input_ids"],  # [B, L]
            batch["example_keys"],  # [B, 3]
            seed=seed,
            max_predictions_per_seq=max_predictions_per_seq,
            special_ids=special_ids,
            mask_id=mask_id,
            vocab_size=vocab_size,
            mask_rate=mask_rate,
            whole_word_masking=whole_word_masking,
            word_starts=batch.get("word_starts"),
        )
        positions = (POSITION_KEY,) if POSITION_KEY in batch else ()  # pack_attention document
        kept = {k: batch[k] for k in ("segment_ids", "input_mask", "next_sentence_labels",
                                      *positions)}  # fmt: skip
        return {k: (masked | kept)[k] for k in (*BATCH_KEYS, *positions)}

    return mask


def make_pretraining_dataset(
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
    """The endless, deterministic stream of this host's masked pre-training batches.

    Args:
      files: record shards (`input_pipeline.records` format): paths, globs, or a list of them.
      settings: the batches' length, predictions, mode and masking (`batches.Settings`).
      ids: the tokenizer's special ids and vocabulary size (`tokenizer.special_ids`); no
        special id is ever chosen for prediction or used as a random replacement.
      batch_size: B, examples per batch on this host.
      seed: decides every random choice (default 0); the same seed gives the same batches.
      process_index, process_count: this host and the number of hosts (default 0 of 1).
      start_step: resume at this step: the first batch is the one an uninterrupted run with
        the same arguments yields at this step (default 0).
      block_documents: documents shuffled together, and the pool of NSP's random documents;
        memory holds about one block (default 1024).
      files_in_parallel: files read interleaved, record by record (default 8).

    Returns:
      A dataset of dicts (`BATCH_KEYS`): input_ids, segment_ids, input_mask int32 [B, L];
      masked_lm_positions, masked_lm_ids int32 [B, P]; masked_lm_weights float32 [B, P];
      next_sentence_labels int32 [B] (1: B is a random segment); with packed rows kept apart
      by document (settings.pack_attention), position_ids int32 [B, L].
    """
    specials = (ids.pad, ids.unk, ids.cls, ids.sep, ids.mask)
    if max(specials) >= ids.vocab_size or min(specials) < 0:
        raise ValueError(f"special ids {specials} must be in [0, vocab_size={ids.vocab_size})")
    dataset = instance_stream.make_instance_dataset(
        files,
        settings,
        ids,
        batch_size=batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        start_step=start_step,
        block_documents=block_documents,
        files_in_parallel=files_in_parallel,
    )
    s = settings
    mask = _masker(seed, s.max_predictions_per_seq, specials, ids.mask, ids.vocab_size,
                   s.mask_rate, s.whole_word_masking)  # fmt: skip
    # The masker has no control flow on tensors: AutoGraph's conversion (about a second a
    # dataset, at every start) would change nothing.
    mask = tf.autograph.experimental.do_not_convert(mask)
    return dataset.map(mask, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def numpy_batches(
    dataset: tf.data.Dataset, keys: Sequence[str], files: PathLike | Sequence[PathLike]
) -> Iterator[dict[str, np.ndarray]]:
    """The `keys` of each batch of `dataset` (made from the shards `files`) as numpy arrays.

    Raises:
      UserError: one raised inside the pipeline's generators (TensorFlow passes it on as the
        text of an `OpError`), or a record of a shard that fails its checksum (damaged after the
        start check, or with `data.verify=size`), naming the damaged shards.
    """
    try:
        for batch in dataset.as_numpy_iterator():
            yield {k: batch[k] for k in keys}
    except tf.errors.OpError as e:
        inner = _USER_ERROR.search(str(e.message))
        if inner:
            raise UserError(inner.group(1).strip()) from None
        if isinstance(e, tf.errors.DataLossError):
            found = instance_stream.expand_record_files(files)
            raise instance_stream.damaged_shards_error(found, e) from None
        raise
