"""Attention kernels: which implementation of `jax.nn.dot_product_attention` a layer runs
(`model.attention_impl`), and the explicit computation that applies dropout to the
probabilities.

  auto   cuDNN's fused flash attention on a GPU where it computes what the layer needs (no
         attention dropout; right-padded rows given by their lengths, not a full mask; a
         16-bit compute dtype; a head width cuDNN takes), XLA's attention everywhere else;
  xla    XLA's attention (any mask), on every backend;
  cudnn  cuDNN's, or a clear error where it cannot compute the layer.

cuDNN's fused attention in jax 0.10 takes sequence lengths (right padding) and a causal or
one-sided (left) window, not a two-sided window nor a per-token block mask: packed rows (each
sequence attending to itself) and ModernBERT's local layers (|i - j| <= window / 2 both ways)
therefore run XLA's attention under `auto`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

ATTENTION_IMPLS = ("auto", "xla", "cudnn")
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def kernel(impl: str, *, dropout: bool, full_mask: bool, dtype, head_dim: int, backend: str) -> str:
    """The computation a layer runs: "explicit" (softmax with dropout), "xla" or "cudnn".

    Args:
      impl: model.attention_impl (ATTENTION_IMPLS).
      dropout: attention dropout is active (training with model.attention_dropout > 0).
      full_mask: the layer needs a [length, kv_length] mask (packed rows, a local window).
      dtype: the compute dtype of the queries and keys.
      head_dim: the width of one head.
      backend: jax's platform of the computation ("cpu", "gpu", "tpu").

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
    cudnn_fits = (
        backend == "gpu"
        and not full_mask
        and jnp.dtype(dtype) in [jnp.dtype(d) for d in _CUDNN_DTYPES]
        and head_dim % 8 == 0
        and head_dim <= 128
    )
    return "cudnn" if impl == "auto" and cudnn_fits else "xla"


def attend(
    kind: str,
    q: Array,
    k: Array,
    v: Array,
    mask: Array,
    input_mask: Array,
    dropout: Callable[[Array], Array] | None = None,
) -> Array:
    """Attention of q, k, v [batch, length, heads, head_dim] -> [batch, length, heads, head_dim].

    mask: [batch or 1, 1, 1 or length, kv_length] bool, the keys each query may attend to (the
    xla and explicit kinds); input_mask: [batch, length], 1 for real tokens (cudnn takes the
    rows' lengths: BERT's inputs are right-padded); dropout: applied to the probabilities
    (the explicit kind).
    """
    if kind == "cudnn":
        lengths = jnp.sum(input_mask, axis=-1, dtype=jnp.int32)
        return jax.nn.dot_product_attention(
            q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
            implementation="cudnn",
        )  # fmt: skip
    if kind == "xla":
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / jnp.sqrt(jnp.float32(q.shape[-1]))
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout is not None:
        probs = dropout(probs)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
