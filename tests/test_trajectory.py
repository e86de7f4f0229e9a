"""Our optimizers and train steps against an independent trainer: LAMB as BERT defines it (timm's
NVIDIA-style Lamb) and AdamW (torch), in pre-training (HF BertForPreTraining on our pipeline's
batches) and in fine-tuning (HF BertForSequenceClassification on SST-2, BertForTokenClassification
on CoNLL-2003), 100 steps each."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import trajectory
import transformers

from bert.model import BertConfig
from bert.training import optim

pytestmark = pytest.mark.full  # the full tier (tests/conftest.py)

TINY = BertConfig(
    vocab_size=30522,
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    intermediate_size=128,
    max_position_embeddings=64,
    hidden_dropout=0.0,
    attention_dropout=0.0,
)
STEPS = 100
# Largest relative difference of a step's loss allowed over the 100 steps (float32 on both
# sides, different summation orders; measured 4e-6 (LAMB) and 9e-6 (AdamW) in pre-training,
# 3e-7 in sequence classification, 5e-6 in tagging, whose loss falls further).
TOLERANCE = {"pretrain": 5e-5, "finetune": 1e-5, "tagging": 3e-5}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    params = trajectory.initial_params(TINY)
    directory = trajectory.export(params, TINY, tmp_path_factory.mktemp("hf") / "model")
    return params, directory


@pytest.fixture(scope="module")
def wiki_batches(shared_data, tmp_path_factory):
    return trajectory.pipeline_batches(
        shared_data, tmp_path_factory.mktemp("data"), STEPS, batch_size=16, seq_length=64,
        predictions=10,
    )  # fmt: skip


@pytest.mark.parametrize("name, lr", [("lamb", 1e-2), ("adamw", 1e-3)])
def test_pretraining_losses_equal_hf_pytorch(name, lr, exported, wiki_batches):
    params, directory = exported
    recipe = trajectory.Recipe(name, lr, warmup_steps=10, total_steps=STEPS)
    ours = trajectory.ours_pretraining(params, TINY, recipe, wiki_batches)
    theirs = trajectory.hf_pretraining(directory, recipe, wiki_batches)
    worst = trajectory.relative_differences(ours, theirs)
    print(
        f"{name}: loss {ours[0]:.4f} -> {ours[-1]:.4f}; max relative difference {worst.max():.2e}"
    )
    assert ours[-1] < ours[0] - 1.0, "the run must learn for the comparison to mean something"
    assert worst.max() < TOLERANCE["pretrain"], (worst.argmax(), worst.max())


@pytest.mark.parametrize("name, lr", [("lamb", 1e-2), ("adamw", 1e-3)])
def test_finetuning_losses_equal_hf_pytorch(name, lr, exported, shared_data):
    params, directory = exported
    batches = trajectory.sst2_batches(shared_data, STEPS, batch_size=16, seq_length=64)
    recipe = trajectory.Recipe(name, lr, warmup_steps=10, total_steps=STEPS)
    model_params = trajectory.classifier_params(TINY, params, num_labels=2)
    ours = trajectory.ours_classification(model_params, TINY, recipe, batches)
    theirs = trajectory.hf_classification(directory, model_params["classifier"], recipe, batches)
    worst = trajectory.relative_differences(ours, theirs)
    print(
        f"{name}: loss {ours[0]:.4f} -> {ours[-1]:.4f}; max relative difference {worst.max():.2e}"
    )
    assert worst.max() < TOLERANCE["finetune"], (worst.argmax(), worst.max())


def test_tagging_losses_equal_hf_pytorch(exported, shared_data):
    """NER's path: BertForTokenClassification against HF's, on CoNLL-2003 batches cut to their
    length buckets (so several compiled shapes), sub-tokens after a word's first ignored."""
    params, directory = exported
    batches, labels = trajectory.conll_batches(shared_data, STEPS, batch_size=16, seq_length=64)
    assert len({b["input_ids"].shape[1] for b in batches}) > 2, "the batches must vary in length"
    recipe = trajectory.Recipe("adamw", 1e-3, warmup_steps=10, total_steps=STEPS)
    model_params = trajectory.classifier_params(TINY, params, num_labels=len(labels))
    ours, _ = trajectory.ours_tagging(model_params, TINY, recipe, batches)
    hf = trajectory.hf_head(
        transformers.BertForTokenClassification, directory, model_params["classifier"]
    )
    theirs = trajectory.hf_tagging(hf, recipe, batches)
    worst = trajectory.relative_differences(ours, theirs)
    print(
        f"tagging: loss {ours[0]:.4f} -> {ours[-1]:.4f}; max relative difference {worst.max():.2e}"
    )
    assert ours[-1] < ours[0] / 2, "the run must learn for the comparison to mean something"
    assert worst.max() < TOLERANCE["tagging"], (worst.argmax(), worst.max())


def test_lamb_moves_zero_biases_as_timm_does():
    """50 LAMB steps on a matrix and a zero-initialised bias, with the same gradients: the bias
    (neither decayed nor adapted) moves as in timm's Lamb, by far more than (1 + lr)^50 of 0."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.02, (16, 8)).astype(np.float32)
    bias = np.zeros(8, np.float32)
    grads = [(rng.normal(0, 1, (16, 8)).astype(np.float32), rng.normal(0, 1, 8).astype(np.float32))
             for _ in range(50)]  # fmt: skip
    schedule = optim.learning_rate_schedule(1e-2, 5, 50)
    tx = optim.make_optimizer("lamb", schedule, weight_decay=0.01)
    params = {"dense": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}
    state = tx.init(params)
    for g_kernel, g_bias in grads:
        g = {"dense": {"kernel": jnp.asarray(g_kernel), "bias": jnp.asarray(g_bias)}}
        updates, state = tx.update(g, state, params)
        params = jax.tree.map(jnp.add, params, updates)

    torch_kernel = torch.nn.Parameter(torch.as_tensor(kernel.T.copy()))
    torch_bias = torch.nn.Parameter(torch.as_tensor(bias.copy()))
    recipe = trajectory.Recipe("lamb", 1e-2, warmup_steps=5, total_steps=50)
    holder = torch.nn.Module()
    holder.weight, holder.bias = torch_kernel, torch_bias
    opt, torch_schedule = trajectory.torch_optimizer(holder, recipe)
    for g_kernel, g_bias in grads:
        torch_kernel.grad = torch.as_tensor(g_kernel.T.copy())
        torch_bias.grad = torch.as_tensor(g_bias)
        opt.step()
        torch_schedule.step()
    got = np.asarray(params["dense"]["bias"])
    np.testing.assert_allclose(got, torch_bias.detach().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(params["dense"]["kernel"]),
                               torch_kernel.detach().numpy().T, rtol=1e-4, atol=1e-6)  # fmt: skip
    assert np.abs(got).max() > 0.05, got  # Adam-sized steps of about the learning rate
