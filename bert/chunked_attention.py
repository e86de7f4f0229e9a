"""Attention computed a few heads at a time (`model.attention_impl` "chunked", `auto` on CPUs).

XLA's attention writes a [batch, heads, length, kv_length] tensor of scores, another of
probabilities, and keeps the probabilities for the backward pass: on a CPU these tensors
(100 MB each at ModernBERT-base's 8 x 512) stream through memory several times. Here a
`lax.map` takes a few heads per step, so that one step's scores stay in a core's cache, and
the backward pass recomputes the probabilities from the softmax's saved max and sum (flash
attention's recipe, without a fused kernel). With `band` (a local layer's half window), each
block of `band` queries reads only the keys within `band` of it.

The numbers are XLA's attention's within float32 rounding, for any mask, a query with no key
allowed (a padding token) included: it gets the mean of all values, as XLA's attention gives it.
"""

import jax
import jax.numpy as jnp

Array = jax.Array

# Scores per lax.map step, [heads, queries, keys] float32: about one core's L2 cache (2 MiB on
# the Xeon of BENCHMARKS.md; 4 MiB ran as fast, 12 MiB slower)
CHUNK_BYTES = 2 * 2**20


def attention(q: Array, k: Array, v: Array, mask: Array, band: int = 0) -> Array:
    """softmax(q k^T / sqrt(head_dim)) v over the keys `mask` allows.

    q, k, v: [batch, length, heads, head_dim]; mask: [batch, 1 or length, length] bool; band:
    the mask allows no key further than `band` positions from its query (0: no such bound).
    Scores are float32 whatever the dtype of q, k and v.
    """
    length = q.shape[1]
    if band <= 0 or length % band or 3 * band >= length:  # a band that saves nothing
        band = 0
    return _attention(q, k, v, mask, band)


def _by_head(x: Array) -> Array:
    """[batch, length, heads, head_dim] -> [batch * heads, length, head_dim]."""
    batch, length, heads, width = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch * heads, length, width)


def _by_token(x: Array, batch: int) -> Array:
    """[batch * heads, length, head_dim] -> [batch, length, heads, head_dim]."""
    n, length, width = x.shape
    return x.reshape(batch, n // batch, length, width).transpose(0, 2, 1, 3)


class _Spans:
    """Query blocks and the keys each reads: without a band one block of all queries and keys;
    with one, blocks of `band` queries, each reading the 3 * band keys from `band` before it to
    `band` after it, indexed in the keys padded by `band` zeros at both ends."""

    def __init__(self, length: int, band: int):
        self.band, self.length = band, length
        self.blocks = length // band if band else 1
        self.block = band or length
        start = jnp.arange(self.blocks)[:, None] * self.block
        self.keys = start + jnp.arange(self.block + 2 * band)[None]  # [blocks, span]

    def gather(self, x: Array) -> Array:
        """[length, ...] keys -> [blocks, span, ...] each block's keys."""
        if not self.band:
            return x[None]
        pad = [(self.band, self.band)] + [(0, 0)] * (x.ndim - 1)
        return jnp.pad(x, pad)[self.keys]

    def mask(self, allowed: Array) -> Array:
        """[1 or length, length] -> [blocks, 1 or block, span]."""
        if not self.band:
            return allowed[None]
        padded = jnp.pad(allowed, [(0, 0), (self.band, self.band)])
        if allowed.shape[0] == 1:
            return padded[0][self.keys][:, None]
        rows = padded.reshape(self.blocks, self.block, -1)
        return jnp.take_along_axis(rows, self.keys[:, None, :], axis=-1)

    def scatter(self, x: Array) -> Array:
        """[blocks, span, ...] -> [length, ...]: each key's sum over the blocks that read it."""
        if not self.band:
            return x[0]
        total = jnp.zeros((self.length + 2 * self.band, *x.shape[2:]), x.dtype)
        return total.at[self.keys].add(x)[self.band : self.band + self.length]


def _scores(q: Array, k: Array, allowed: Array) -> Array:
    """Scaled, masked scores of one head's blocks, [blocks, block, span] float32."""
    scores = jnp.einsum("nqd,nkd->nqk", q, k, preferred_element_type=jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(q.shape[-1]))
    return jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)


def _keyless(top: Array) -> Array:
    """Which query rows have no key allowed, from their largest score."""
    return top == jnp.finfo(jnp.float32).min


def _heads_per_step(length: int, spans: _Spans) -> int:
    return max(1, CHUNK_BYTES // (4 * length * spans.keys.shape[1]))


def _forward(q, k, v, mask, band):
    batch, length, heads = q.shape[:3]
    spans = _Spans(length, band)

    def one_head(head):
        qh, kh, vh, index = head
        qb = qh.reshape(spans.blocks, spans.block, -1)
        scores = _scores(qb, spans.gather(kh), spans.mask(mask[index // heads]))
        top = jnp.max(scores, axis=-1, keepdims=True)
        weights = jnp.exp(scores - top)
        total = jnp.sum(weights, axis=-1, keepdims=True)
        vb = spans.gather(vh).astype(jnp.float32)
        out = jnp.einsum("nqk,nkd->nqd", weights / total, vb)
        mean = jnp.mean(vh.astype(jnp.float32), axis=0)  # a query with no key: all values'
        out = jnp.where(_keyless(top), mean, out).reshape(length, -1)
        return out.astype(q.dtype), jnp.concatenate([top, total], axis=-1)

    qs, ks, vs = _by_head(q), _by_head(k), _by_head(v)
    index = jnp.arange(qs.shape[0])
    out, softmax = jax.lax.map(
        one_head, (qs, ks, vs, index), batch_size=_heads_per_step(length, spans)
    )  # fmt: skip
    return _by_token(out, batch), (qs, ks, vs, mask, out, softmax)


def _backward(band, saved, grad_out):
    qs, ks, vs, mask, out, softmax = saved
    batch, length = mask.shape[0], qs.shape[1]
    heads = qs.shape[0] // batch
    spans = _Spans(length, band)

    def one_head(head):
        qh, kh, vh, oh, sh, gh, index = head
        shape = (spans.blocks, spans.block, -1)
        qb, ob, gb = (x.astype(jnp.float32).reshape(shape) for x in (qh, oh, gh))
        keys = spans.gather(kh)
        kb, vb = keys.astype(jnp.float32), spans.gather(vh).astype(jnp.float32)
        allowed = spans.mask(mask[index // heads])
        # the softmax's max and sum kept apart: a row with no key has scores of float32's min,
        # which a log-sum-exp would absorb its log(kv_length) into
        probs = jnp.exp(_scores(qh.reshape(shape), keys, allowed) - sh[..., :1])
        keyless = _keyless(sh[..., :1])  # these take the mean of all values
        probs = jnp.where(keyless, 0.0, probs / sh[..., 1:])
        grad_v = jnp.einsum("nqk,nqd->nkd", probs, gb)
        grad_probs = jnp.einsum("nqd,nkd->nqk", gb, vb)
        carried = jnp.sum(gb * ob, axis=-1, keepdims=True)
        grad_scores = probs * (grad_probs - carried) / jnp.sqrt(jnp.float32(qh.shape[-1]))
        grad_scores = jnp.where(allowed, grad_scores, 0.0)
        grad_q = jnp.einsum("nqk,nkd->nqd", grad_scores, kb).reshape(length, -1)
        grad_k = spans.scatter(jnp.einsum("nqk,nqd->nkd", grad_scores, qb))
        grad_v = spans.scatter(grad_v) + jnp.sum(jnp.where(keyless, gb, 0.0), axis=(0, 1)) / length
        return grad_q.astype(qh.dtype), grad_k.astype(kh.dtype), grad_v.astype(vh.dtype)

    index = jnp.arange(qs.shape[0])
    grads = jax.lax.map(
        one_head, (qs, ks, vs, out, softmax, _by_head(grad_out), index),
        batch_size=_heads_per_step(length, spans),
    )  # fmt: skip
    return (*(_by_token(g, batch) for g in grads), None)


_attention = jax.custom_vjp(lambda q, k, v, mask, band: _forward(q, k, v, mask, band)[0],
                            nondiff_argnums=(4,))  # fmt: skip
_attention.defvjp(_forward, _backward)
