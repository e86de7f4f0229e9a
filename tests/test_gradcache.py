"""The cached loss (GradCache: config.mini_batch_size, bert/finetuning/gradcache.py): the loss and
its gradient equal the uncached ones over the same batch within 1e-5, on one device and on an 8-
device mesh (two jax.distributed processes: tests/test_distributed.py), with hard negatives,
the symmetric loss and Matryoshka; and an AdamW step at batch 512 computed 16 rows at a time
gives the parameters of the uncached step; and the loss and gradient equal sentence-transformers'
CachedMultipleNegativesRankingLoss's on the same model and batch."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import train_helpers
from train_helpers import STILL

from bert import embedding_losses, pretrained
from bert.biencoder import BertBiEncoder
from bert.convert.params import params_to_hf
from bert.finetuning import batches, gradcache
from bert.finetuning.objective import Finetuning
from bert.jobs import embeddings as embeddings_job
from bert.tasks import sts
from bert.training import sharding, step
from util.errors import UserError

TOLERANCE = 1e-5


def _close(got, want, relative: bool = True) -> None:
    """Every leaf within TOLERANCE (relative: of its largest entry, so that a gradient that is
    analytically zero compares within float noise)."""
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want),
                            strict=True):  # fmt: skip
        bound = TOLERANCE * float(np.max(np.abs(b))) + 1e-9 if relative else TOLERANCE
        assert np.max(np.abs(np.asarray(a) - np.asarray(b))) <= bound, jax.tree_util.keystr(path)


def test_a_cached_step_on_8_devices_equals_the_uncached_step():
    """(One device: the tests below; two processes: tests/test_distributed.py.)"""
    batch = train_helpers.pair_batch(32)
    want_loss, want = train_helpers.mnrl_step((8, 1, 1), None, batch, STILL)
    loss, got = train_helpers.mnrl_step((8, 1, 1), None, batch, STILL, mini_batches=4)
    assert abs(loss - want_loss) <= TOLERANCE * want_loss, (loss, want_loss)
    _close(got, want)


OPTIONS = [("mnrl", True, (32, 8)), ("cosent", False, (16,))]


@pytest.mark.parametrize("loss_name, symmetric, dims", OPTIONS)
def test_every_loss_and_option_caches_exactly(loss_name, symmetric, dims):
    """Triplets (a hard negative per row) with the symmetric loss and Matryoshka, and CoSENT."""
    model = BertBiEncoder(STILL)
    rng = np.random.default_rng(0)
    sides = 3 if loss_name == "mnrl" else 2
    inputs = []
    for side in range(sides):
        ids = rng.integers(5, STILL.vocab_size, (48, 10 + 2 * side)).astype(np.int32)
        inputs += [ids, np.zeros_like(ids), (rng.random(ids.shape) < 0.9).astype(np.int32)]
    params = model.init(jax.random.key(0), inputs[0])["params"]
    labels = jnp.asarray(rng.random(48).astype(np.float32))
    loss = embedding_losses.make(loss_name, symmetric=symmetric, matryoshka_dims=dims)

    def apply(p, xs, key):
        del key
        return model.apply({"params": p}, *xs)

    def plain(p):
        return loss(apply(p, inputs, None), labels)

    def cached(p):
        return loss(gradcache.cached_apply(apply, p, tuple(inputs), None, 6), labels)

    want_loss, want = jax.jit(jax.value_and_grad(plain))(params)
    got_loss, got = jax.jit(jax.value_and_grad(cached))(params)
    assert abs(float(got_loss) - float(want_loss)) <= TOLERANCE * float(want_loss)
    _close(got, want)


def test_an_adamw_step_at_batch_512_with_mini_batch_16_gives_the_same_parameters():
    batch = train_helpers.pair_batch(512)
    mesh = sharding.make_mesh((8, 1, 1))
    model = BertBiEncoder(STILL)
    tx = optax.adamw(1e-3, eps=1e-6, weight_decay=0.01)
    schedule = optax.constant_schedule(1e-3)
    _, shardings = step.state_shardings(model, tx, mesh, 16)
    params = []
    loss = embeddings_job.loss_sums(embedding_losses.make("mnrl"))
    for chunks in (0, batches.mini_batches(16, 512, 8)):
        objective = Finetuning(model, loss, embeddings_job.side_keys(2), ("label",),
                               mini_batches=chunks)  # fmt: skip
        state = step.create_train_state(model, tx, mesh, seed=0, seq_length=16)
        train_step = step.compile_train_step(objective, tx, schedule, mesh, shardings)
        state, _ = train_step(state, sharding.global_batch(batch, mesh))
        params.append(jax.device_get(state.params))
    start = step.create_train_state(model, tx, mesh, seed=0, seq_length=16).params
    _close(params[1], params[0], relative=False)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params[0], start)
    assert max(jax.tree.leaves(moved)) > 5e-4  # the step moved the parameters


def test_mini_batch_sizes_that_do_not_fit_are_one_line():
    assert batches.mini_batches(0, 64, 8) == 0 and batches.mini_batches(16, 64, 8) == 4
    for size in (12, 24, -8):
        with pytest.raises(UserError, match=rf"config.mini_batch_size={size} must divide"):
            batches.mini_batches(size, 64, 8)


def test_cached_loss_equals_sentence_transformers_cached_mnrl(shared_data, tiny_hf):
    """The same tiny BERT, STS pairs and mini-batches of 4 rows: the loss and the gradient of
    every encoder weight equal CachedMultipleNegativesRankingLoss's (dropout off)."""
    from sentence_transformers import SentenceTransformer, models
    from sentence_transformers import losses as st_losses

    rows = sts.read_sts_benchmark(shared_data / "stsbenchmark" / "sts-train.csv")[:24]
    sides = [[p.sentence1 for p in rows], [p.sentence2 for p in rows]]
    transformer = models.Transformer(str(tiny_hf), max_seq_length=64)
    st = SentenceTransformer(modules=[transformer, models.Pooling(32, "mean")], device="cpu")
    st.eval()
    cached = st_losses.CachedMultipleNegativesRankingLoss(st, mini_batch_size=4)
    value = cached([st.tokenize(side) for side in sides], torch.zeros(24))
    value.backward()
    value = float(value.detach())
    theirs = {name: p.grad.numpy() for name, p in transformer.auto_model.named_parameters()
              if p.grad is not None}  # fmt: skip

    loaded = pretrained.load(str(tiny_hf))
    config = dataclasses.replace(loaded.config, hidden_dropout=0.0, attention_dropout=0.0)
    model = BertBiEncoder(config, "mean", normalize=False)
    arrays = embeddings_job.training_features(loaded.tokenizer, sides, np.zeros(24), 64)
    inputs = tuple(arrays[k] for k in embeddings_job.side_keys(2))
    mnrl = embedding_losses.make("mnrl")

    def loss(params):
        apply = lambda p, xs, key: model.apply({"params": p}, *xs)  # noqa: E731
        return mnrl(gradcache.cached_apply(apply, params, inputs, None, 6), None)

    ours, grads = jax.jit(jax.value_and_grad(loss))({"bert": loaded.params["bert"]})
    assert abs(float(ours) - value) <= TOLERANCE * value, (float(ours), value)
    named = params_to_hf(jax.device_get(grads), config)
    assert len(theirs) > 30
    for name, want in theirs.items():
        got = named["bert." + name]
        bound = TOLERANCE * float(np.max(np.abs(want))) + 1e-9
        assert np.max(np.abs(got - want)) <= bound, name
