"""Rotary position embeddings (RoFormer, Su et al. 2021) as ModernBERT and Llama apply them: each
head's vector is split in halves (x1, x2), and position p turns the pair of dimensions (i, i + d/2)
by the angle p * theta^(-2i/d)."""

import jax
import jax.numpy as jnp

Array = jax.Array


def rotate(x: Array, positions: Array, theta: float) -> Array:
    """`x` [batch, length, heads, head_dim] rotated by `positions` [batch or 1, length]; the
    angles in float32, the result in x's dtype."""
    half = x.shape[-1] // 2
    inverse_frequencies = 1.0 / theta ** (
        jnp.arange(0, 2 * half, 2, dtype=jnp.float32) / (2 * half)
    )
    angles = positions.astype(jnp.float32)[..., None] * inverse_frequencies  # [b, length, half]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [b, length, 1, d]
    x32 = x.astype(jnp.float32)
    turned = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * jnp.cos(angles) + turned * jnp.sin(angles)).astype(x.dtype)
