"""Fine-tuning objectives equal their PyTorch references (HF's heads compute these losses), and
accumulated fine-tuning steps equal one full-batch step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import train_helpers
from flax import traverse_util

from bert import losses
from bert.finetuning.objective import Finetuning
from bert.heads import BertForTokenClassification
from bert.tasks.features import ENCODER_INPUTS
from bert.training import optim, sharding
from bert.training import step as train_step

RNG = np.random.default_rng(0)


def torch_ce(logits, labels, ignore_index=-100):
    return torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(labels, dtype=torch.long), ignore_index=ignore_index
    ).item()


def mean(pair):
    total, count = pair
    return float(total) / float(count)


def test_classification_and_tagging_loss_equal_torch_cross_entropy():
    logits = RNG.normal(size=(6, 9, 5)).astype(np.float32)
    labels = RNG.integers(0, 5, size=(6, 9)).astype(np.int32)
    labels[:, 0] = labels[0, 3:] = -1  # [CLS], non-first sub-tokens, padding
    sums = losses.classification_sums(jnp.asarray(logits), jnp.asarray(labels))
    want = torch_ce(logits.reshape(-1, 5), labels.reshape(-1), -1)
    assert mean(sums["loss"]) == pytest.approx(want, rel=1e-5)
    assert float(sums["loss"][1]) == float(losses.label_count(jnp.asarray(labels))) == 42
    kept = labels >= 0
    accuracy = np.mean(np.argmax(logits, -1)[kept] == labels[kept])
    assert mean(sums["accuracy"]) == pytest.approx(accuracy)


def test_regression_loss_equals_torch_mse_and_skips_missing_scores():
    predictions = RNG.normal(size=(8, 1)).astype(np.float32)
    scores = RNG.uniform(0, 5, size=8).astype(np.float32)
    scores[2] = np.nan
    sums = losses.regression_sums(jnp.asarray(predictions), jnp.asarray(scores))
    keep = ~np.isnan(scores)
    want = torch.nn.functional.mse_loss(
        torch.tensor(predictions[keep, 0]), torch.tensor(scores[keep])
    ).item()
    assert mean(sums["loss"]) == pytest.approx(want, rel=1e-5)
    assert float(losses.label_count(jnp.asarray(scores))) == 7


def test_span_loss_equals_bert_squad_loss():
    start, end = (RNG.normal(size=(4, 12)).astype(np.float32) for _ in range(2))
    start_positions = np.array([0, 3, 11, 5], np.int32)
    end_positions = np.array([0, 4, 11, 9], np.int32)
    sums = losses.span_sums(*map(jnp.asarray, (start, end, start_positions, end_positions)))
    want = (torch_ce(start, start_positions) + torch_ce(end, end_positions)) / 2
    assert mean(sums["loss"]) == pytest.approx(want, rel=1e-5)


@pytest.mark.full
def test_accumulated_tagging_step_equals_full_batch():
    """4 micro-batches with unequal numbers of labelled tokens give the full batch's update."""
    batch = train_helpers.synthetic_batch(1)
    labels = np.where(batch["input_mask"] > 0, RNG.integers(0, 3, batch["input_ids"].shape), -1)
    labels[::4, 5:] = -1  # some rows have far fewer labelled tokens
    batch = {k: batch[k] for k in ENCODER_INPUTS} | {"label": labels.astype(np.int32)}
    no_dropout = dataclasses.replace(train_helpers.TINY, hidden_dropout=0, attention_dropout=0)
    model = BertForTokenClassification(no_dropout, 3)
    objective = Finetuning(model, lambda logits, b: losses.classification_sums(
        logits, b["label"]), ENCODER_INPUTS, ("label",))  # fmt: skip
    mesh = sharding.make_mesh((8, 1, 1))
    schedule = optim.learning_rate_schedule(1e-3, 0, 10)
    tx = optim.make_optimizer("adamw", schedule, 0.01)
    _, shardings = train_step.state_shardings(model, tx, mesh, 16)
    results = []
    for accumulation in (1, 4):
        state = train_step.create_train_state(model, tx, mesh, 0, 16)
        step = train_step.compile_train_step(objective, tx, schedule, mesh, shardings, accumulation)
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        results.append((jax.device_get(state.params), float(metrics["loss"])))
    (full, full_loss), (accumulated, accumulated_loss) = results
    assert accumulated_loss == pytest.approx(full_loss, rel=1e-5)
    flat = traverse_util.flatten_dict(accumulated)
    for key, value in traverse_util.flatten_dict(full).items():
        np.testing.assert_allclose(flat[key], value, rtol=1e-5, atol=1e-6, err_msg=str(key))
