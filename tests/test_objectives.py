"""Objectives as plug-ins: the registry, and the objective's own random key beside dropout's."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import train_helpers

from bert import objectives
from bert.objectives import Mlm, MlmNsp
from bert.training import sharding, step
from util.errors import UserError


def test_registry_creates_each_objective_and_names_the_known_ones():
    assert isinstance(objectives.create("mlm_nsp", train_helpers.TINY), MlmNsp)
    mlm = objectives.create("mlm", train_helpers.TINY)
    assert (
        type(mlm) is Mlm
        and mlm.data_mode == "packed"
        and "next_sentence_labels" not in (mlm.batch_keys)
    )
    params = jax.eval_shape(mlm.model.init, jax.random.key(0), jnp.ones((1, 8), jnp.int32))
    assert sorted(params["params"]) == ["bert", "mlm"]  # no NSP head to train
    # a checkpoint without the NSP head is scored on its MLM alone
    assert not objectives.create("mlm_nsp", train_helpers.TINY, {"bert", "mlm"}).with_nsp
    with pytest.raises(
        UserError, match="config.objective='electric' is not one of mlm_nsp, mlm, electra"
    ):
        objectives.create("electric", train_helpers.TINY)


def test_perplexity_beyond_float32_is_reported_as_infinite():
    """An exploding run's held-out loss: its perplexity is inf, not a number TensorBoard's
    float32 scalars overflow on (or a crash)."""
    mlm = objectives.create("mlm", train_helpers.TINY)
    assert mlm.eval_metrics({"mlm_loss": 2.0})["mlm_perplexity"] == pytest.approx(np.exp(2.0))
    assert mlm.eval_metrics({"mlm_loss": 88.0})["mlm_perplexity"] < np.finfo(np.float32).max
    for huge in (89.0, 2.6e7, float("inf")):
        assert mlm.eval_metrics({"mlm_loss": huge})["mlm_perplexity"] == float("inf")


@dataclasses.dataclass(frozen=True)
class Draws(MlmNsp):
    """MLM + NSP, reporting a uniform draw from the objective's key and one from dropout's."""

    def loss_fn(self, params, batch, rngs, totals):
        loss, sums = super().loss_fn(params, batch, rngs, totals)
        one = jnp.float32(1.0)
        sums["objective_draw"] = (jax.random.uniform(rngs["objective"]), one)
        sums["dropout_draw"] = (jax.random.uniform(rngs["dropout"]), one)
        return loss, sums


@pytest.mark.parametrize("accumulation", [pytest.param(1, marks=pytest.mark.full), 2])
def test_objective_key_is_its_own_per_step_and_micro_batch(accumulation):
    """The train step hands the objective a key of its own stream (step.step_rngs): fixed by the
    seed and the step (a resumed step draws the same), another each step and micro-batch, and
    not dropout's, whose stream stays fold_in(key(seed), step)."""
    objective = Draws(dataclasses.replace(train_helpers.TINY, num_layers=1))
    mesh = sharding.make_mesh((2, 1, 1), jax.devices()[:2])
    tx, schedule = optax.sgd(0.0), optax.constant_schedule(0.0)
    _, shardings = step.state_shardings(objective.model, tx, mesh, 16)
    train_step = step.compile_train_step(objective, tx, schedule, mesh, shardings, accumulation,
                                         seed=3)  # fmt: skip
    batch = sharding.global_batch(train_helpers.synthetic_batch(0), mesh)
    state = step.create_train_state(objective.model, tx, mesh, 0, 16, shardings=shardings)
    host = jax.device_get(state)  # the step donates its state: each call gets a copy
    draws = []
    for at in (0, 1, 1):
        copy = jax.device_put(host.replace(step=np.int32(at)), shardings)
        _, metrics = train_step(copy, batch)
        draws.append((float(metrics["objective_draw_sum"]), float(metrics["dropout_draw_sum"])))
    keys = step.step_rngs(3, jnp.int32(1))
    assert keys["dropout"] == jax.random.fold_in(jax.random.key(3), 1)

    def expected(key):
        if accumulation == 1:
            return float(jax.random.uniform(key))
        return sum(float(jax.random.uniform(jax.random.fold_in(key, i))) for i in range(2))

    assert draws[1] == draws[2]  # the same step draws the same
    assert draws[0][0] != draws[1][0]  # another step, another draw
    np.testing.assert_allclose(draws[1], (expected(keys["objective"]), expected(keys["dropout"])),
                               rtol=1e-6)  # fmt: skip
    assert draws[1][0] != draws[1][1]  # the objective's stream is not dropout's


def test_an_unknown_objective_stops_the_job_before_any_data_is_read(tmp_path):
    from bert.jobs import pretrain
    from configs import bert_base

    config = bert_base.get_config("size=tiny")
    config.objective, config.data.input = "electric", str(tmp_path / "missing-*.txt")
    with pytest.raises(UserError, match="config.objective='electric'"):
        pretrain.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
