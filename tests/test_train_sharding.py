"""The same training steps on different meshes give the single-device numbers."""

import dataclasses

import jax
import numpy as np
import pytest
import train_helpers
from jax.sharding import PartitionSpec

from bert.training import sharding

STEPS = 5
TOLERANCE = 1e-5  # relative


def run(mesh_shape, devices=None, accumulation_steps=1, config=train_helpers.TINY):
    mesh, state, train_step, _ = train_helpers.setup(
        mesh_shape, devices, accumulation_steps, config
    )
    losses = []
    for i in range(STEPS):
        batch = sharding.global_batch(train_helpers.synthetic_batch(i), mesh)
        state, metrics = train_step(state, batch)
        losses.append(float(metrics["loss"]))
    return np.array(losses), state


@pytest.fixture(scope="module")
def single_device():
    return run((1, 1, 1), jax.devices()[:1])


def relative_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def assert_same_params(got_state, want_state):
    got = jax.tree_util.tree_leaves_with_path(jax.device_get(got_state.params))
    want = jax.tree.leaves(jax.device_get(want_state.params))
    for (path, a), b in zip(got, want, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if np.max(np.abs(b)) < 1e-6:
            # The attention key bias has an analytically zero gradient (softmax is invariant
            # to it): it stays at zero up to float noise, which has no relative precision.
            assert np.max(np.abs(a)) < 1e-6, jax.tree_util.keystr(path)
        else:
            assert relative_error(a, b) <= TOLERANCE, jax.tree_util.keystr(path)


@pytest.mark.parametrize(
    "mesh_shape",
    [pytest.param(s, marks=pytest.mark.full) for s in [(8, 1, 1), (4, 1, 2), (1, 8, 1)]]
    + [(2, 2, 2)],  # all three axes at once: the fast tier's mesh
)
def test_meshes_match_single_device(single_device, mesh_shape):
    assert len(jax.devices()) == 8
    want_losses, want_state = single_device
    losses, state = run(mesh_shape)
    assert relative_error(losses, want_losses) <= TOLERANCE, (losses, want_losses)
    assert_same_params(state, want_state)


def test_parameters_are_sharded_as_the_rules_say():
    _, state = run((2, 2, 2))
    params = state.params
    # ('vocab', 'embed'): 101 rows do not split in two, so the vocabulary is replicated.
    word = params["bert"]["embeddings"]["word_embeddings"]
    assert word.sharding.spec == PartitionSpec(None, "fsdp")
    query = params["bert"]["layer_0"]["attention"]["query"]["kernel"]  # ('embed', 'heads')
    assert query.sharding.spec == PartitionSpec("fsdp", "tensor")
    shard = query.addressable_shards[0].data.shape
    assert shard == (query.shape[0] // 2, query.shape[1] // 2)
    output = params["bert"]["layer_0"]["output"]["kernel"]  # ('mlp', 'embed')
    assert output.sharding.spec == PartitionSpec("tensor", "fsdp")
    # Adam moments follow their parameters.
    moments = [x for x in jax.tree.leaves(state.opt_state) if getattr(x, "shape", ()) == word.shape]
    assert moments and all(m.sharding.spec == PartitionSpec(None, "fsdp") for m in moments)
    intermediate = params["bert"]["layer_1"]["intermediate"]["kernel"]  # ('embed', 'mlp')
    assert intermediate.sharding.spec == PartitionSpec("fsdp", "tensor")


def test_gradient_accumulation_equals_full_batch():
    """4 micro-batches of 4 give the 16-row batch's losses and parameters (dropout off, since
    each micro-batch draws its own dropout masks)."""
    no_dropout = dataclasses.replace(train_helpers.TINY, hidden_dropout=0.0, attention_dropout=0.0)
    want_losses, want_state = run((2, 1, 1), jax.devices()[:2], 1, no_dropout)
    losses, state = run((2, 1, 1), jax.devices()[:2], 4, no_dropout)
    assert relative_error(losses, want_losses) <= TOLERANCE, (losses, want_losses)
    assert_same_params(state, want_state)
