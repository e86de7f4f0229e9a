"""bert/dropout.py: the unrolled Threefry dropout draws exactly the masks of JAX and Flax.

Reference: `jax.random.bits` / `jax.random.bernoulli` (JAX's own threefry, rolled on CPU) and
`flax.linen.Dropout`. Equality is exact (bits, booleans, outputs), so the model's training
numbers are those it had with flax's dropout.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bert import dropout
from bert.model import BertConfig, BertModel

SHAPES = [(1,), (7,), (3, 5), (2, 3, 4, 5), (16, 12, 33, 33)]


def keys():
    return [jax.random.key(0), jax.random.key(12345), jax.random.fold_in(jax.random.key(7), 3),
            jax.random.PRNGKey(42)]  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
def test_random_bits_equal_jax(shape):
    for key in keys():
        ours = np.asarray(jax.jit(dropout.random_bits, static_argnums=1)(key, shape))
        np.testing.assert_array_equal(ours, np.asarray(jax.random.bits(key, shape, jnp.uint32)))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_bernoulli_equals_jax(p):
    shape = (16, 12, 33, 33)
    for key in keys():
        ours = np.asarray(dropout.bernoulli(key, p, shape))
        np.testing.assert_array_equal(ours, np.asarray(jax.random.bernoulli(key, p, shape)))
        assert abs(ours.mean() - p) < 0.01  # 209,088 draws: 5 standard deviations ~ 0.005


def test_other_keys_fall_back_to_jax():
    key = jax.random.key(3, impl="rbg")
    assert not dropout.fast_path(key, (4, 5))
    np.testing.assert_array_equal(
        np.asarray(dropout.bernoulli(key, 0.9, (4, 5))),
        np.asarray(jax.random.bernoulli(key, 0.9, (4, 5))),
    )
    assert dropout.fast_path(jax.random.key(3), (4, 5))
    assert not dropout.fast_path(jax.random.key(3), (2**16, 2**16))


class Twice(nn.Module):
    """Two dropout layers, one of them called twice (as TransformerLayer calls its own)."""

    make: type
    rate: float

    @nn.compact
    def __call__(self, x, deterministic):
        shared = self.make(self.rate)
        y = shared(x, deterministic=deterministic)
        y = shared(y * 2.0, deterministic=deterministic)
        return self.make(self.rate)(y + 1.0, deterministic=deterministic)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dropout_equals_flax(rate, dtype):
    x = jax.random.normal(jax.random.key(1), (4, 9, 24), dtype)
    rngs = {"dropout": jax.random.key(5)}
    ours = Twice(dropout.Dropout, rate).apply({}, x, False, rngs=rngs)
    theirs = Twice(nn.Dropout, rate).apply({}, x, False, rngs=rngs)
    assert ours.dtype == theirs.dtype == dtype
    np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(theirs, np.float32))
    same = Twice(dropout.Dropout, rate).apply({}, x, True)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(Twice(nn.Dropout, rate).apply(
        {}, x, True)))  # fmt: skip


def test_sharded_mask_equals_unsharded():
    """On an 8-device mesh, rows sharded over the devices, the mask is the one-device mask,
    each device drawing its own rows (no collective)."""
    mesh = jax.make_mesh((8,), ("data",))
    x = jax.device_put(jnp.ones((16, 12, 64, 64)), NamedSharding(mesh, P("data")))
    rngs = {"dropout": jax.random.key(9)}

    @jax.jit
    def apply(x):
        return dropout.Dropout(0.1).apply({}, x, False, rngs=rngs)

    got = apply(x)
    assert got.sharding.is_equivalent_to(x.sharding, x.ndim)
    compiled = apply.lower(x).compile().as_text()
    assert not any(op in compiled for op in ("all-gather", "all-reduce", "all-to-all"))
    want = nn.Dropout(0.1).apply({}, np.ones((16, 12, 64, 64), np.float32), False, rngs=rngs)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.full
def test_bert_training_outputs_unchanged(monkeypatch):
    """A small BertModel in training mode gives the same hidden states as with flax's dropout
    (the same module names, so the same rngs)."""
    config = BertConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    ids = jax.random.randint(jax.random.key(0), (3, 20), 1, 99)
    model = BertModel(config)
    params = model.init(jax.random.key(1), ids)

    def run():
        out = model.apply(params, ids, jnp.zeros_like(ids), jnp.ones_like(ids),
                          deterministic=False, rngs={"dropout": jax.random.key(2)})  # fmt: skip
        return jax.tree.map(np.asarray, out)

    ours = run()
    monkeypatch.setattr("bert.model.Dropout", nn.Dropout)
    theirs = run()
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    deterministic = model.apply(params, ids, jnp.zeros_like(ids), jnp.ones_like(ids))
    assert not np.allclose(jax.tree.leaves(ours)[0], np.asarray(jax.tree.leaves(deterministic)[0]))
