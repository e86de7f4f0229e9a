"""Dropout with its keep mask hashed by an unrolled Threefry-2x32: bit for bit the mask of
`flax.linen.Dropout` (`jax.random.bernoulli` of the same key), generated far faster on CPU.

JAX lowers its threefry primitive on CPU as a loop of 5 iterations of 4 rounds, to compile
faster; XLA then runs each mask through a while loop that writes every intermediate array
out, and fuses none of it. Dropout on every hidden state and attention probability of a
small encoder draws tens of millions of random numbers a step, a large share of a CPU training
step. Written out as plain integer ops, the 20 rounds fuse into one elementwise loop, many
times faster (BENCHMARKS.md, "Step components"). GPUs and TPUs already get the unrolled rounds
from JAX, so there this is the same computation.

The mask is the one `jax.random.bernoulli(key, 1 - rate, shape)` draws with JAX's default
keys (threefry2x32, `jax_threefry_partitionable` on, as in every JAX since 0.5): each
element's bits hash its row-major index, so a sharded mask is computed where it lives.
Other keys or settings fall back to `jax.random.bernoulli` (tests/test_dropout.py).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

# Threefry-2x32's rotation distances, alternating every 4 rounds (Salmon et al., 2011).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = 0x1BD11BDA  # the third key word is k1 ^ k2 ^ this


def threefry2x32(key1: Array, key2: Array, x1: Array, x2: Array) -> tuple[Array, Array]:
    """The Threefry-2x32 hash (20 rounds) of the counter pairs (x1, x2) [uint32, any shape]
    under the key (key1, key2) [uint32 scalars], unrolled."""
    keys = (key1, key2, key1 ^ key2 ^ np.uint32(_KEY_PARITY))
    x1, x2 = x1 + keys[0], x2 + keys[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = ((x2 << np.uint32(r)) | (x2 >> np.uint32(32 - r))) ^ x1
        x1 = x1 + keys[(i + 1) % 3]
        x2 = x2 + keys[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def random_bits(key: Array, shape: tuple[int, ...]) -> Array:
    """uint32 bits of `shape`: `jax.random.bits(key, shape, jnp.uint32)` for a partitionable
    threefry key of fewer than 2**32 elements (`fast_path`)."""
    index = jnp.zeros(shape, np.uint32)  # each element's row-major index, from per-axis iotas
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + lax.broadcasted_iota(np.uint32, shape, axis) * np.uint32(stride)
        stride *= shape[axis]
    data = jax.random.key_data(key)
    high, low = threefry2x32(data[0], data[1], jnp.zeros(shape, np.uint32), index)
    return high ^ low


def fast_path(key: Array, shape: tuple[int, ...]) -> bool:
    """Whether `random_bits` draws the bits JAX would for this key and shape."""
    return (
        str(jax.random.key_impl(key)) == "threefry2x32"
        and jax.config.jax_threefry_partitionable
        and not jax.config.jax_enable_x64  # a Python float p is then float64: 64-bit draws
        and math.prod(shape) < 2**32
    )


def bernoulli(key: Array, p: float, shape: tuple[int, ...]) -> Array:
    """`jax.random.bernoulli(key, p, shape)`, bit for bit: True with probability p."""
    if not fast_path(key, shape):
        return jax.random.bernoulli(key, p, shape)
    # As jax.random.uniform: 23 random mantissa bits under the exponent of 1.0, minus 1.
    mantissa = (random_bits(key, shape) >> np.uint32(9)) | np.uint32(0x3F800000)
    return lax.bitcast_convert_type(mantissa, jnp.float32) - jnp.float32(1.0) < jnp.float32(p)


class Dropout(nn.Module):
    """`flax.linen.Dropout` (same name, so the same rngs; same outputs), with `bernoulli`.

    Attributes:
      rate: the probability of dropping an element; kept ones are scaled by 1 / (1 - rate).
    """

    rate: float
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool) -> Array:
        if deterministic or self.rate == 0.0:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        keep = 1.0 - self.rate
        mask = bernoulli(self.make_rng(self.rng_collection), keep, inputs.shape)
        return lax.select(mask, inputs / keep, jnp.zeros_like(inputs))
