"""Gradient caching (GradCache, Gao et al. 2021; sentence-transformers' cached losses): a model's
outputs over a large batch computed mini-batch by mini-batch, keeping no activations, and
differentiated mini-batch by mini-batch, so that a loss over the whole batch (every row a
negative of every other) costs the memory of one mini-batch.

`cached_apply(apply, params, inputs, key, chunks)` equals `apply(params, inputs, key)` in value;
its gradient is computed in three steps, as sentence-transformers' CachedMultipleNegativesRanking
Loss does: the outputs of every mini-batch without gradients (forward), the loss and its
gradient with respect to the outputs (the caller's, once, over the whole batch), then each
mini-batch's forward again with its vector-Jacobian product for that gradient, summed into the
parameters' gradient (backward). Mini-batch c takes rows c, c + chunks, c + 2 chunks, ...: with
the batch sharded over devices in blocks of rows, each device holds the same share of every
mini-batch, so every device works on every pass and no row moves between devices. Dropout takes
one key per mini-batch (the step's key folded with its index), the same in both passes.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Apply = Callable[[Any, tuple[Array, ...], Array | None], Array]  # (params, inputs, key) -> out


def _split(x: Array, chunks: int) -> Array:
    """[rows, ...] -> [chunks, rows / chunks, ...]; chunk c holds rows c, c + chunks, ..."""
    return jnp.swapaxes(x.reshape(x.shape[0] // chunks, chunks, *x.shape[1:]), 0, 1)


def _join(x: Array) -> Array:
    """The inverse of `_split`."""
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _keys(key: Array | None, chunks: int) -> Array | None:
    """One dropout key per mini-batch (None: no dropout)."""
    if key is None:
        return None
    return jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(chunks))


def _forward(apply: Apply, params, inputs: tuple[Array, ...], key, chunks: int) -> Array:
    parts = tuple(_split(x, chunks) for x in inputs)

    def one(_, part):
        xs, k = part
        return None, apply(params, xs, k)

    _, outputs = jax.lax.scan(one, None, (parts, _keys(key, chunks)))
    return _join(outputs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4))
def cached_apply(apply: Apply, params, inputs: tuple[Array, ...], key, chunks: int) -> Array:
    """`apply(params, inputs, key)` over `chunks` mini-batches of the rows of `inputs`, with the
    gradient of a loss on its result computed mini-batch by mini-batch (see the module doc).

    Args:
      apply: the model on one mini-batch: (params, inputs, dropout key or None) -> [rows, ...].
      inputs: arrays [rows, ...], rows a multiple of `chunks` (no gradient flows to them).
      key: the dropout key, or None (no dropout).
      chunks: the number of mini-batches.
    """
    return _forward(apply, params, inputs, key, chunks)


def _cached_fwd(apply, params, inputs, key, chunks):
    return _forward(apply, params, inputs, key, chunks), (params, inputs, key)


def _cached_bwd(apply, chunks, residuals, cotangent):
    params, inputs, key = residuals
    parts = tuple(_split(x, chunks) for x in inputs)

    def one(total, part):
        xs, k, g = part
        _, pullback = jax.vjp(lambda p: apply(p, xs, k), params)
        (grads,) = pullback(g)
        return jax.tree.map(jnp.add, total, grads), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(one, zeros, (parts, _keys(key, chunks), _split(cotangent, chunks)))
    return total, None, None


cached_apply.defvjp(_cached_fwd, _cached_bwd)
