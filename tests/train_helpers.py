"""Small synthetic batches and a tiny model for training tests: pre-training, and a bi-encoder
with the multiple-negatives ranking loss."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert import embedding_losses
from bert.biencoder import BertBiEncoder
from bert.finetuning.objective import Finetuning
from bert.jobs import embeddings as embeddings_job
from bert.model import BertConfig
from bert.objectives import MlmNsp
from bert.training import optim, sharding, step

TINY = BertConfig(
    vocab_size=101,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    max_position_embeddings=32,
)


def synthetic_batch(seed: int, batch: int = 16, length: int = 16, predictions: int = 4):
    """A right-padded batch with the pipeline's keys and dtypes."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, length + 1, size=batch)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, TINY.vocab_size, size=(batch, length)).astype(np.int32) * mask
    segments = ((np.arange(length)[None] >= lengths[:, None] // 2) * mask).astype(np.int32)
    positions = np.stack([rng.choice(np.arange(1, n), predictions, replace=False) for n in lengths])
    weights = np.ones((batch, predictions), np.float32)
    weights[::3, -1] = 0.0  # some padding predictions
    return {
        "input_ids": ids,
        "segment_ids": segments,
        "input_mask": mask,
        "masked_lm_positions": positions.astype(np.int32) * (weights > 0),
        "masked_lm_ids": np.take_along_axis(ids, positions, 1) * (weights > 0).astype(np.int32),
        "masked_lm_weights": weights,
        "next_sentence_labels": rng.integers(0, 2, size=batch).astype(np.int32),
    }


def setup(
    mesh_shape, devices=None, accumulation_steps=1, config=TINY, lr=1e-3, steps=100, opt="lamb"
):
    """(mesh, state, train_step, eval_step) for the tiny model with LAMB."""
    mesh = sharding.make_mesh(mesh_shape, devices)
    objective = MlmNsp(config)
    model = objective.model
    schedule = optim.learning_rate_schedule(lr, 2, steps)
    tx = optim.make_optimizer(opt, schedule, weight_decay=0.01)
    state = step.create_train_state(model, tx, mesh, seed=0, seq_length=16)
    _, shardings = step.state_shardings(model, tx, mesh, 16)
    train_step = step.compile_train_step(
        objective, tx, schedule, mesh, shardings, accumulation_steps, seed=0
    )
    eval_step = step.compile_eval_step(objective, mesh, shardings.params)
    return mesh, state, train_step, eval_step


# TINY without dropout: a cached step equals an uncached one only on the same dropout masks
STILL = dataclasses.replace(TINY, hidden_dropout=0.0, attention_dropout=0.0)


def keep_gradients() -> optax.GradientTransformation:
    """An "optimizer" that leaves the parameters alone and keeps the last gradient as its state."""

    def update(grads, state, params=None):
        del state, params
        return jax.tree.map(jnp.zeros_like, grads), grads

    return optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p), update)


def mnrl_step(mesh_shape, devices, batch, config=TINY, mini_batches=0):
    """The loss and the gradient of one jitted, sharded train step of a tiny bi-encoder with
    the MNRL loss (`mini_batches` > 0: cached, bert/finetuning/gradcache.py). `batch` is this
    process's rows of the global batch (all of it in one process); the gradient comes back as
    numpy, so its leaves must be replicated."""
    mesh = sharding.make_mesh(mesh_shape, devices)
    model = BertBiEncoder(config)
    keys = embeddings_job.side_keys(2)
    objective = Finetuning(
        model, embeddings_job.loss_sums(embedding_losses.make("mnrl")), keys, ("label",),
        mini_batches=mini_batches,
    )  # fmt: skip
    tx, schedule = keep_gradients(), optax.constant_schedule(0.0)
    state = step.create_train_state(model, tx, mesh, seed=0, seq_length=16)
    _, shardings = step.state_shardings(model, tx, mesh, 16)
    train_step = step.compile_train_step(objective, tx, schedule, mesh, shardings)
    state, metrics = train_step(state, sharding.global_batch(batch, mesh))
    return float(metrics["loss"]), jax.device_get(state.opt_state)


def pair_batch(rows: int = 16):
    """A batch of `rows` (first, second) text pairs with the embeddings job's keys, labels 0."""
    first, second = synthetic_batch(0, rows), synthetic_batch(1, rows)
    batch = {}
    for side, source in zip(embeddings_job.side_keys(2)[::3], (first, second), strict=True):
        prefix = side[: -len("input_ids")]
        for key in ("input_ids", "segment_ids", "input_mask"):
            batch[prefix + key] = source[key]
    batch["label"] = np.zeros(rows, np.float32)
    return batch
