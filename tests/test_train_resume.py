"""Exact resume through Orbax checkpoints, and learning on a fixed batch."""

import jax
import numpy as np
import pytest
import train_helpers

from bert.heads import BertForPreTraining
from bert.training import checkpoints, optim, sharding
from bert.training import step as step_lib


def steps(state, train_step, mesh, first, last):
    losses = []
    for i in range(first, last):
        state, metrics = train_step(
            state, sharding.global_batch(train_helpers.synthetic_batch(i), mesh)
        )
        losses.append(jax.device_get(metrics))
    return state, losses


def test_resume_is_bitwise_identical(tmp_path):
    mesh, state, train_step, _ = train_helpers.setup((4, 1, 2))
    full_state, full_metrics = steps(state, train_step, mesh, 0, 10)

    mesh, state, train_step, _ = train_helpers.setup((4, 1, 2))
    state, first_half = steps(state, train_step, mesh, 0, 5)
    ckpts = checkpoints.Checkpoints(tmp_path, max_to_keep=2)
    ckpts.save(5, state, {"step": 5})
    ckpts.wait()
    del state

    model = BertForPreTraining(train_helpers.TINY)
    tx = optim.make_optimizer("lamb", optim.learning_rate_schedule(1e-3, 2, 100), 0.01)
    abstract, shardings = step_lib.state_shardings(model, tx, mesh, 16)
    restored, meta = ckpts.restore(ckpts.latest_step(), abstract, shardings)
    ckpts.close()
    assert meta == {"step": 5} and int(restored.step) == 5
    restored, second_half = steps(restored, train_step, mesh, 5, 10)

    for got, want in zip(first_half + second_half, full_metrics, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    got = jax.tree.leaves(jax.device_get((restored.params, restored.opt_state)))
    want = jax.tree.leaves(jax.device_get((full_state.params, full_state.opt_state)))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.full
def test_overfitting_one_batch_drives_mlm_loss_near_zero():
    mesh, state, train_step, eval_step = train_helpers.setup((8, 1, 1), lr=3e-2, steps=1000)
    batch = sharding.global_batch(train_helpers.synthetic_batch(0), mesh)
    first = step_lib.summarize([eval_step(state.params, batch)])
    for _ in range(100):
        state, metrics = train_step(state, batch)
        jax.block_until_ready(metrics)  # keep fake-device collectives from queueing up
    last = step_lib.summarize([eval_step(state.params, batch)])
    assert first["mlm_loss"] > 4.0, first  # about log(101) at random initialisation
    assert last["mlm_loss"] < 0.05, last
    assert last["mlm_accuracy"] == 1.0 and last["nsp_accuracy"] == 1.0, last


def test_load_params_reads_only_parameters(tmp_path):
    mesh, state, _, _ = train_helpers.setup((2, 2, 2))
    ckpts = checkpoints.Checkpoints(tmp_path, max_to_keep=1)
    ckpts.save(3, state, {"step": 3})
    ckpts.close()
    params, meta = checkpoints.load_params(tmp_path)
    assert meta == {"step": 3}
    want = jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))
    got = jax.tree.leaves(params)
    assert len(got) == len(want)
    for (path, b), a in zip(want, got, strict=True):
        assert isinstance(a, np.ndarray), jax.tree_util.keystr(path)
        np.testing.assert_array_equal(a, b)
