"""Sentence-embedding losses as sentence-transformers defines them, as pure JAX functions.

Every loss takes `embeddings` [batch, sides, dim] (side 0 the anchor or first sentence, side 1
the positive or second sentence, sides 2.. hard negatives) and `labels` [batch] (the scores of
scored pairs; ignored by the ranking losses) and returns the mean loss as a float32 scalar.

In-batch negatives and the whole global batch: under `jax.jit` with the batch sharded over
devices (bert/training/step.py), `embeddings` is one global array spanning every device of
every host. The similarity matrix [batch, batch * candidates] is a product of two such arrays,
so XLA gathers the candidates from all devices (and, through the collectives of
`jax.distributed`, from all hosts) before the softmax: each anchor is ranked against every
row of the global batch, not only against the rows of its own device or host. Nothing here
calls a collective by hand; the sharded step equals the one-device step over the same batch
(tests/test_embedding_losses.py). Gradient accumulation would split the batch and with it the
negatives, so the embedding job refuses it.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
LossFn = Callable[[Array, Array], Array]  # (embeddings [batch, sides, dim], labels [batch])

LOSSES = ("mnrl", "cosent", "cosine")
EPS = 1e-12  # torch.nn.functional.normalize's default, as sentence-transformers uses it


def normalize(x: Array) -> Array:
    """Rows scaled to unit L2 norm (norms below EPS divided by EPS)."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), EPS)


def _cosine_matrix(a: Array, b: Array) -> Array:
    """Cosine similarity of every row of `a` [m, dim] with every row of `b` [n, dim]: [m, n]."""
    return jnp.matmul(normalize(a), normalize(b).T, precision=jax.lax.Precision.HIGHEST)


def _pairwise_cosine(a: Array, b: Array) -> Array:
    """Cosine similarity of row i of `a` with row i of `b`: [batch]."""
    return jnp.sum(normalize(a) * normalize(b), axis=-1)


def multiple_negatives_ranking(
    embeddings: Array, labels: Array | None = None, scale: float = 20.0, symmetric: bool = False
) -> Array:
    """InfoNCE with in-batch negatives (sentence-transformers' MultipleNegativesRankingLoss).

    Anchor i is scored (cosine times `scale`) against the positives of every row of the batch
    and every hard negative of every row; the loss is the cross-entropy of its own positive.

    Args:
      embeddings: [batch, 2 + negatives, dim]: anchor, positive, then hard negatives.
      labels: unused.
      scale: the inverse temperature (20 in sentence-transformers).
      symmetric: also rank, for each positive, its anchor among all anchors, and average the
        two cross-entropies (MultipleNegativesSymmetricRankingLoss; hard negatives take part
        in the first direction only).
    """
    del labels
    anchors = embeddings[:, 0]  # [batch, dim]
    batch = anchors.shape[0]
    # [(sides - 1) * batch, dim]: all positives, then the first hard negative of every row, ...
    candidates = jnp.swapaxes(embeddings[:, 1:], 0, 1).reshape(-1, embeddings.shape[-1])
    logits = scale * _cosine_matrix(anchors, candidates)  # [batch, (sides - 1) * batch]
    rows = jnp.arange(batch)
    positive = logits[rows, rows]  # [batch]
    loss = jax.nn.logsumexp(logits, axis=-1) - positive
    if symmetric:
        backward = scale * _cosine_matrix(embeddings[:, 1], anchors)  # [batch, batch]
        loss = (loss + jax.nn.logsumexp(backward, axis=-1) - positive) / 2
    return jnp.mean(loss)


def cosent(embeddings: Array, labels: Array, scale: float = 20.0) -> Array:
    """CoSENT (sentence-transformers' CoSENTLoss): log(1 + sum over pairs (i, j) with
    label_i < label_j of exp(scale * (cos_i - cos_j))), over the whole batch.

    Args:
      embeddings: [batch, 2, dim]; labels: [batch] similarity scores (any monotone scale).
    """
    cosine = scale * _pairwise_cosine(embeddings[:, 0], embeddings[:, 1])  # [batch]
    difference = cosine[:, None] - cosine[None, :]  # [batch, batch]
    ordered = labels[:, None] < labels[None, :]
    terms = jnp.where(ordered, difference, -jnp.inf).reshape(-1)
    return jax.nn.logsumexp(jnp.concatenate([jnp.zeros((1,), jnp.float32), terms]))


def cosine_similarity(embeddings: Array, labels: Array) -> Array:
    """Mean squared error between the pair's cosine and its label (CosineSimilarityLoss).

    Args:
      embeddings: [batch, 2, dim]; labels: [batch] target cosines (STS scores / 5 in -1..1).
    """
    cosine = _pairwise_cosine(embeddings[:, 0], embeddings[:, 1])
    return jnp.mean(jnp.square(cosine - labels.astype(jnp.float32)))


def matryoshka(loss: LossFn, dims: Sequence[int], weights: Sequence[float] = ()) -> LossFn:
    """`loss` summed over the embeddings cut to each of `dims` (first `d` components, then
    L2-normalised), each term times its weight (MatryoshkaLoss; weights default to 1)."""
    weights = tuple(weights) or (1.0,) * len(dims)
    if len(weights) != len(dims):
        raise ValueError(f"{len(weights)} matryoshka weights for {len(dims)} dims")

    def wrapped(embeddings: Array, labels: Array) -> Array:
        if max(dims) > embeddings.shape[-1]:
            raise ValueError(
                f"matryoshka dim {max(dims)} exceeds the embedding size {embeddings.shape[-1]}"
            )
        terms = zip(dims, weights, strict=True)
        return sum(w * loss(normalize(embeddings[..., :d]), labels) for d, w in terms)

    return wrapped


def make(
    name: str,
    scale: float = 20.0,
    symmetric: bool = False,
    matryoshka_dims: Sequence[int] = (),
    matryoshka_weights: Sequence[float] = (),
) -> LossFn:
    """The loss `name` (one of LOSSES), wrapped in matryoshka when `matryoshka_dims` is given.

    Args:
      scale: the inverse temperature of mnrl and cosent.
      symmetric: mnrl's symmetric variant.
    """
    if name == "mnrl":

        def loss(e: Array, y: Array) -> Array:
            return multiple_negatives_ranking(e, y, scale, symmetric)
    elif name == "cosent":

        def loss(e: Array, y: Array) -> Array:
            return cosent(e, y, scale)
    elif name == "cosine":
        loss = cosine_similarity
    else:
        raise ValueError(f"loss {name!r} is not one of {', '.join(LOSSES)}")
    if matryoshka_dims:
        return matryoshka(loss, matryoshka_dims, matryoshka_weights)
    return loss
