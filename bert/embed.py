"""Sentence embeddings from any loaded checkpoint (bert/pretrained.py): texts tokenized as
[CLS] text [SEP], sorted by length, batched in length buckets, pooled (mean, CLS or max) and
optionally L2-normalised, as sentence-transformers computes them."""

import functools
from collections.abc import Sequence

import jax
import numpy as np

from bert import pretrained
from bert.finetuning import buckets
from bert.heads import BertForSentenceEmbedding
from bert.model import BertConfig


@functools.partial(jax.jit, static_argnames=("config", "pooling", "normalize"))
def _embed_batch(params, ids, segments, mask, *, config: BertConfig, pooling: str, normalize: bool):
    model = BertForSentenceEmbedding(config, pooling, normalize, with_pooler=False)  # unused
    return model.apply({"params": {"bert": params}}, ids, segments, mask)  # [batch, embed]


def embed(
    model: pretrained.Pretrained,
    sentences: Sequence[str],
    max_seq_length: int = 256,
    batch_size: int = 64,
    pooling: str = "mean",
    normalize: bool = True,
    pad_to_multiple_of: int = 8,
) -> np.ndarray:
    """Embeddings [len(sentences), embed] as float32.

    Sentences are tokenized as [CLS] text [SEP], truncated to `max_seq_length`, sorted by length
    and padded per batch to a length bucket of `pad_to_multiple_of` (few compiled shapes, little
    padding; 0: every batch at `max_seq_length`).
    """
    tok = model.tokenizer
    params = jax.device_put(model.encoder)  # once: host arrays would be copied at every batch
    encoded = []
    for ids in tok.encode_batch_ids(list(sentences)):
        ids, _ = tok.build_inputs(ids[: max_seq_length - 2])
        encoded.append(ids)
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    out = np.zeros((len(encoded), model.config.hidden_size), np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        longest = max(len(encoded[i]) for i in chunk)
        length = buckets.bucket_length(longest, pad_to_multiple_of, max_seq_length)
        ids = np.full((batch_size, length), tok.pad_id, np.int32)
        mask = np.zeros((batch_size, length), np.int32)
        for row, i in enumerate(chunk):
            ids[row, : len(encoded[i])] = encoded[i]
            mask[row, : len(encoded[i])] = 1
        vectors = _embed_batch(
            params, ids, np.zeros_like(ids), mask,
            config=model.config, pooling=pooling, normalize=normalize,
        )  # fmt: skip
        out[chunk] = np.asarray(vectors)[: len(chunk)]
    return out
