"""The embedding losses equal sentence-transformers' own loss classes (values and gradients),
and in-batch negatives cover the whole global batch of a sharded train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import train_helpers
from sentence_transformers import losses as st_losses

from bert import embedding_losses
from bert.biencoder import BertBiEncoder
from bert.finetuning import buckets
from bert.jobs import embeddings as embeddings_job

TOLERANCE = 1e-5


class GivenEmbeddings(torch.nn.Module):
    """Stands in for a SentenceTransformer: each side's features carry its embeddings."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def get_embedding_dimension(self) -> int:
        return self.dim

    def forward(self, features):
        return {"sentence_embedding": features["embedding"]}


def reference(make_loss, embeddings: np.ndarray, labels: np.ndarray):
    """sentence-transformers' loss and its gradient for embeddings [batch, sides, dim]."""
    model = GivenEmbeddings(embeddings.shape[-1])
    sides = [torch.tensor(embeddings[:, k], requires_grad=True) for k in range(embeddings.shape[1])]
    loss = make_loss(model)([{"embedding": s} for s in sides], torch.tensor(labels))
    loss.backward()
    return float(loss), np.stack([s.grad.numpy() for s in sides], axis=1)


def ours(loss_fn, embeddings: np.ndarray, labels: np.ndarray):
    value, grad = jax.value_and_grad(loss_fn)(jnp.asarray(embeddings), jnp.asarray(labels))
    return float(value), np.asarray(grad)


def data(seed: int, batch: int = 12, sides: int = 2, dim: int = 16):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(batch, sides, dim)).astype(np.float32)
    embeddings[:, 1] += 0.8 * embeddings[:, 0]  # positives resemble their anchors
    labels = rng.integers(0, 6, size=batch).astype(np.float32) / 5  # ties included
    return embeddings, labels


CASES = {
    "mnrl": (
        lambda m: st_losses.MultipleNegativesRankingLoss(m),
        embedding_losses.make("mnrl"),
        2,
    ),
    "mnrl_hard_negatives": (
        lambda m: st_losses.MultipleNegativesRankingLoss(m, scale=10.0),
        embedding_losses.make("mnrl", scale=10.0),
        4,
    ),
    "mnrl_symmetric": (
        lambda m: st_losses.MultipleNegativesSymmetricRankingLoss(m),
        embedding_losses.make("mnrl", symmetric=True),
        2,
    ),
    "mnrl_symmetric_hard_negatives": (
        lambda m: st_losses.MultipleNegativesRankingLoss(
            m, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
        ),
        embedding_losses.make("mnrl", symmetric=True),
        3,
    ),
    "cosent": (lambda m: st_losses.CoSENTLoss(m), embedding_losses.make("cosent"), 2),
    "cosine": (lambda m: st_losses.CosineSimilarityLoss(m), embedding_losses.make("cosine"), 2),
    "matryoshka_cosent": (
        lambda m: st_losses.MatryoshkaLoss(m, st_losses.CoSENTLoss(m), [16, 8, 4], [1, 0.5, 2]),
        embedding_losses.make("cosent", matryoshka_dims=(16, 8, 4), matryoshka_weights=(1, 0.5, 2)),
        2,
    ),
    "matryoshka_mnrl_hard_negatives": (
        lambda m: st_losses.MatryoshkaLoss(m, st_losses.MultipleNegativesRankingLoss(m), [4, 12]),
        embedding_losses.make("mnrl", matryoshka_dims=(4, 12)),
        3,
    ),
    "matryoshka_cosine": (
        lambda m: st_losses.MatryoshkaLoss(m, st_losses.CosineSimilarityLoss(m), [16, 6]),
        embedding_losses.make("cosine", matryoshka_dims=(16, 6)),
        2,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_and_gradient_equal_sentence_transformers(name):
    make_reference, loss_fn, sides = CASES[name]
    for seed in range(3):
        embeddings, labels = data(seed, sides=sides)
        want, want_grad = reference(make_reference, embeddings, labels)
        got, got_grad = ours(loss_fn, embeddings, labels)
        assert abs(got - want) <= TOLERANCE * max(1.0, abs(want)), (got, want)
        np.testing.assert_allclose(got_grad, want_grad, atol=TOLERANCE)


def test_losses_tell_good_embeddings_from_bad():
    embeddings, labels = data(0)
    matched = embeddings.copy()
    matched[:, 1] = matched[:, 0]  # every positive equals its anchor
    mnrl = embedding_losses.make("mnrl")
    assert float(mnrl(matched, labels)) < float(mnrl(embeddings, labels))
    with pytest.raises(ValueError, match="is not one of mnrl, cosent, cosine"):
        embedding_losses.make("triplet")
    with pytest.raises(ValueError, match="matryoshka dim 32 exceeds the embedding size 16"):
        embedding_losses.make("cosent", matryoshka_dims=(32,))(embeddings, labels)


def test_in_batch_negatives_cover_the_global_batch_on_8_devices():
    assert len(jax.devices()) == 8
    batch = train_helpers.pair_batch(16)  # 2 rows per device on the 8-device mesh
    want_loss, want_grads = train_helpers.mnrl_step((1, 1, 1), jax.devices()[:1], batch)
    for mesh_shape in ((8, 1, 1),):
        loss, grads = train_helpers.mnrl_step(mesh_shape, None, batch)
        assert abs(loss - want_loss) <= TOLERANCE * want_loss, (mesh_shape, loss, want_loss)
        for (path, a), b in zip(
            jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(want_grads), strict=True
        ):
            # relative to the leaf's largest entry; the attention key bias's gradient is
            # analytically zero (softmax ignores it), float noise of 1e-11 there
            bound = TOLERANCE * float(np.max(np.abs(b))) + 1e-9
            assert np.max(np.abs(a - b)) <= bound, jax.tree_util.keystr(path)
    # The test can tell: negatives taken only from each device's own 2 rows give another loss.
    model = BertBiEncoder(train_helpers.TINY)
    params = model.init(jax.random.key(0), batch["text0_input_ids"])["params"]
    embeddings = model.apply({"params": params}, *(batch[k] for k in embeddings_job.side_keys(2)))
    mnrl = embedding_losses.make("mnrl")
    whole = float(mnrl(embeddings, None))
    local = np.mean([float(mnrl(embeddings[i : i + 2], None)) for i in range(0, 16, 2)])
    assert abs(local - whole) > 0.5, (local, whole)


def test_sides_cut_to_their_own_lengths_embed_as_at_the_full_length():
    """A bi-encoder batch whose sides are cut to different length buckets (a short first text
    beside a long second one, as the training job cuts them: buckets.cut_texts) gives the
    embeddings of the fully padded batch (one stacked pass) within float rounding."""
    batch = train_helpers.pair_batch(8)
    short = batch["text0_input_mask"].copy()
    short[:, 8:] = 0  # the first texts end by position 8, the second ones run to 16
    for key in ("text0_input_ids", "text0_segment_ids"):
        batch[key] = batch[key] * short
    batch["text0_input_mask"] = short
    cut = buckets.cut_texts(batch, {"text0_input_mask": 8, "text1_input_mask": 16}, full=16)
    assert cut["text0_input_ids"].shape == (8, 8) and cut["text1_input_ids"].shape == (8, 16)
    model = BertBiEncoder(train_helpers.TINY)
    keys = embeddings_job.side_keys(2)
    params = model.init(jax.random.key(0), batch["text0_input_ids"])["params"]
    full = model.apply({"params": params}, *(batch[k] for k in keys))
    each = model.apply({"params": params}, *(cut[k] for k in keys))
    assert full.shape == each.shape == (8, 2, train_helpers.TINY.hidden_size)
    np.testing.assert_allclose(each, full, rtol=0, atol=1e-6)
