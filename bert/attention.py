"""Attention kernels: which computation of attention a layer runs (`model.attention_impl`),
and the explicit computation that applies dropout to the probabilities.

  auto     cuDNN's fused flash attention on a GPU where it computes what the layer needs (no
           attention dropout; right-padded rows given by their lengths, not a full mask; a
           16-bit compute dtype; a head width cuDNN takes), the chunked kernel on a CPU for
           scores larger than its caches, XLA's attention everywhere else;
  xla      XLA's attention (`jax.nn.dot_product_attention`, any mask), on every backend;
  chunked  the same numbers computed a few heads at a time, each step's scores small enough to
           stay in a CPU core's cache, with a backward that recomputes the probabilities
           (bert/chunked_attention.py); on a CPU twice as fast as `xla`, and it keeps no
           [heads, length, length] tensor per layer for the backward pass (BENCHMARKS.md);
  cudnn    cuDNN's, or a clear error where it cannot compute the layer.

cuDNN's fused attention in jax 0.10 takes sequence lengths (right padding) and a causal or
one-sided (left) window, not a two-sided window nor a per-token block mask: packed rows (each
sequence attending to itself) and ModernBERT's local layers (|i - j| <= window / 2 both ways)
therefore run XLA's attention under `auto` on a GPU.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from bert.chunked_attention import attention as chunked_attention

Array = jax.Array

ATTENTION_IMPLS = ("auto", "xla", "chunked", "cudnn")
# `auto` on a CPU takes the chunked kernel from float32 scores of this size per layer up: below
# it XLA's attention runs as fast (the scores fit the caches) and compiles 0.1-0.2 s sooner; at
# 24 MiB (batch 32 x 128 or 8 x 256, 12 heads) the chunked kernel is 6% slower to 25% faster,
# from 48 MiB faster (BENCHMARKS.md, bench/modernbert_speed.py --attention)
CHUNKED_FROM_BYTES = 16 * 2**20
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def kernel(
    impl: str, *, dropout: bool, full_mask: bool, dtype, head_dim: int, backend: str, scores: int
) -> str:
    """The computation a layer runs: "explicit" (softmax with dropout), "xla", "chunked" or
    "cudnn".

    Args:
      impl: model.attention_impl (ATTENTION_IMPLS).
      dropout: attention dropout is active (training with model.attention_dropout > 0).
      full_mask: the layer needs a [length, kv_length] mask (packed rows, a local window).
      dtype: the compute dtype of the queries and keys.
      head_dim: the width of one head.
      backend: jax's platform of the computation ("cpu", "gpu", "tpu").
      scores: the size of the layer's scores, batch x heads x length x kv_length.

    Returns "explicit" wherever attention dropout is active and the impl is not "cudnn".

    Raises:
      ValueError: attention_impl "cudnn" asked for what cuDNN cannot compute.
    """
    if impl == "cudnn":
        if dropout:
            raise ValueError(
                "model.attention_impl='cudnn' cannot apply attention dropout; "
                "set model.attention_dropout=0.0 or model.attention_impl='xla' (or 'auto')"
            )
        if full_mask:
            raise ValueError(
                "model.attention_impl='cudnn' cannot attend within packed sequences or a local "
                "window; set config.train.pack=False and model.local_window=0, or "
                "model.attention_impl='xla' (or 'auto')"
            )
        return "cudnn"
    if dropout:
        return "explicit"
    if impl == "auto" and backend == "cpu":
        return "chunked" if 4 * scores >= CHUNKED_FROM_BYTES else "xla"
    cudnn_fits = (
        backend == "gpu"
        and not full_mask
        and jnp.dtype(dtype) in [jnp.dtype(d) for d in _CUDNN_DTYPES]
        and head_dim % 8 == 0
        and head_dim <= 128
    )
    if impl == "auto":
        return "cudnn" if cudnn_fits else "xla"
    return impl


def attend(
    kind: str,
    q: Array,
    k: Array,
    v: Array,
    mask: Array,
    input_mask: Array,
    dropout: Callable[[Array], Array] | None = None,
    band: int = 0,
) -> Array:
    """Attention of q, k, v [batch, length, heads, head_dim] -> [batch, length, heads, head_dim].

    mask: [batch or 1, 1, 1 or length, kv_length] bool, the keys each query may attend to (the
    xla and explicit kinds); input_mask: [batch, length], 1 for real tokens (cudnn takes the
    rows' lengths: BERT's inputs are right-padded); dropout: applied to the probabilities
    (the explicit kind); band: the chunked kind computes only the keys within `band` positions
    of each query (the mask allows none beyond: a local layer's half window), 0 for all.
    """
    if kind == "cudnn":
        lengths = jnp.sum(input_mask, axis=-1, dtype=jnp.int32)
        return jax.nn.dot_product_attention(
            q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
            implementation="cudnn",
        )  # fmt: skip
    if kind == "xla":
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
    if kind == "chunked":
        mask = jnp.broadcast_to(mask[:, 0], (q.shape[0], mask.shape[2], k.shape[1]))
        return chunked_attention(q, k, v, mask, band)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / jnp.sqrt(jnp.float32(q.shape[-1]))
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout is not None:
        probs = dropout(probs)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
