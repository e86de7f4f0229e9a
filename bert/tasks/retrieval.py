"""Brute-force dense retrieval in JAX, and the metrics of sentence-transformers'
``InformationRetrievalEvaluator`` (accuracy, precision, recall @k, MRR@k, nDCG@k, MAP@k).

:func:`search` scores every query against every corpus row (cosine or dot product) and keeps
the top k. The corpus is split into equal blocks, one per device of the mesh (every axis of
it taken together), and each device walks its block in chunks of ``corpus_chunk`` rows,
keeping a running top k, so memory per device is bounded by ``query_chunk x (k +
corpus_chunk)`` scores plus one chunk of rows, never by the corpus; the per-device top-k
lists are then merged. Queries go through in blocks of ``query_chunk`` (one compiled shape).
Scores use full float32 matmul precision, so the result does not depend on the device count.
Equal scores are ordered by corpus index (lower first).

Metric names are sentence-transformers': ``cosine_recall@10``, ``dot_ndcg@10``, ... Its
evaluator breaks ties in its own heap order; with distinct scores the two agree exactly.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bert.tasks.retrieval_data import RetrievalSet
from util.errors import UserError

SCORES = ("cosine", "dot")
AXIS = "corpus"  # the one axis of the flattened mesh the corpus is split over


@dataclasses.dataclass(frozen=True)
class RetrievalOptions:
    """How to search and what to report (configs/sts.py documents each field).

    Attributes:
      score: "cosine" or "dot".
      accuracy_at: the k of accuracy@k, precision@k and recall@k.
      mrr_at, ndcg_at, map_at: the k of MRR@k, nDCG@k and MAP@k.
      corpus_chunk: corpus rows scored at a time per device.
      query_chunk: queries scored at a time.
    """

    score: str
    accuracy_at: tuple[int, ...]
    mrr_at: tuple[int, ...]
    ndcg_at: tuple[int, ...]
    map_at: tuple[int, ...]
    corpus_chunk: int
    query_chunk: int

    def __post_init__(self):
        if self.score not in SCORES:
            raise UserError(f"retrieval score {self.score!r} is not one of {', '.join(SCORES)}")
        ks = self.accuracy_at + self.mrr_at + self.ndcg_at + self.map_at
        if not ks or min(ks) < 1:
            raise UserError(f"retrieval cut-offs must be positive integers, got {ks}")
        if self.corpus_chunk < 1 or self.query_chunk < 1:
            raise UserError("retrieval corpus_chunk and query_chunk must be positive")

    @property
    def max_k(self) -> int:
        return max(self.accuracy_at + self.mrr_at + self.ndcg_at + self.map_at)


def corpus_mesh(devices: Sequence[jax.Device] | Mesh | None = None) -> Mesh:
    """A one-axis mesh over `devices` (a mesh's devices, all devices when None)."""
    if isinstance(devices, Mesh):
        devices = list(devices.devices.flat)
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (AXIS,))


def _merge(values, indices, more_values, more_indices, k: int):
    """The top k of two candidate lists [q, *] (first list first among equal scores)."""
    values = jnp.concatenate([values, more_values], axis=1)
    indices = jnp.concatenate([indices, more_indices], axis=1)
    values, order = jax.lax.top_k(values, k)
    return values, jnp.take_along_axis(indices, order, axis=1)


def _block_top_k(corpus, queries, *, k: int, chunk: int, num_valid: int):
    """One device: the top k of `queries` [q, d] over its corpus block [rows, d]."""
    rows = corpus.shape[0]
    first_row = jax.lax.axis_index(AXIS) * rows
    chunks = corpus.reshape(rows // chunk, chunk, corpus.shape[1])  # [chunks, chunk, d]

    def step(carry, inputs):
        rows_of_chunk, number = inputs
        scores = jnp.matmul(queries, rows_of_chunk.T, precision=jax.lax.Precision.HIGHEST)
        index = first_row + number * chunk + jnp.arange(chunk, dtype=jnp.int32)  # [chunk]
        scores = jnp.where(index[None, :] < num_valid, scores, -jnp.inf)  # [q, chunk]
        index = jnp.broadcast_to(index[None, :], scores.shape)
        return _merge(*carry, scores, index, k), None

    start = (jnp.full((queries.shape[0], k), -jnp.inf, queries.dtype),
             jnp.full((queries.shape[0], k), -1, jnp.int32))  # fmt: skip
    numbers = jnp.arange(chunks.shape[0], dtype=jnp.int32)
    (values, indices), _ = jax.lax.scan(step, start, (chunks, numbers))
    return values, indices  # [q, k] each


@functools.partial(jax.jit, static_argnames=("mesh", "k", "chunk", "num_valid"))
def _search_block(corpus, queries, *, mesh: Mesh, k: int, chunk: int, num_valid: int):
    per_device = jax.shard_map(
        functools.partial(_block_top_k, k=k, chunk=chunk, num_valid=num_valid),
        mesh=mesh,
        in_specs=(P(AXIS), P()),
        out_specs=(P(None, AXIS), P(None, AXIS)),
        check_vma=False,
    )
    values, indices = per_device(corpus, queries)  # [q, devices * k], device blocks in order
    values, order = jax.lax.top_k(values, k)
    indices = jnp.take_along_axis(indices, order, axis=1)
    replicated = NamedSharding(mesh, P())  # every host can read the result
    return (jax.lax.with_sharding_constraint(values, replicated),
            jax.lax.with_sharding_constraint(indices, replicated))  # fmt: skip


def normalized(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm on the host (norms below 1e-12 divided by 1e-12, as
    bert/embedding_losses.py's `normalize` on the devices)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def search(
    queries: np.ndarray, corpus: np.ndarray, k: int, options: RetrievalOptions,
    mesh: Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The top-k corpus rows of each query, best first.

    Args:
      queries: [num_queries, dims] embeddings.
      corpus: [num_docs, dims] embeddings.
      k: how many to keep (at most num_docs).
      options: the score and chunk sizes.
      mesh: the corpus is split over its devices (all axes together); None: all devices.

    Returns:
      scores float32 [num_queries, min(k, num_docs)] and corpus indices int32 of the same shape.
    """
    queries = np.asarray(queries, np.float32)
    corpus = np.asarray(corpus, np.float32)
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise UserError(f"retrieval needs [n, d] embeddings of one width, got queries "
                        f"{queries.shape} and corpus {corpus.shape}")  # fmt: skip
    if not len(queries) or not len(corpus):
        raise UserError(f"retrieval needs queries and a corpus, got {len(queries)} queries "
                        f"and {len(corpus)} documents")  # fmt: skip
    if options.score == "cosine":
        queries, corpus = normalized(queries), normalized(corpus)
    mesh = corpus_mesh(mesh)
    devices = mesh.devices.size
    num_docs, k = corpus.shape[0], min(k, corpus.shape[0])
    chunk = min(options.corpus_chunk, math.ceil(num_docs / devices))
    rows = devices * chunk * math.ceil(num_docs / (devices * chunk))
    padded = np.zeros((rows, corpus.shape[1]), np.float32)
    padded[:num_docs] = corpus
    sharding, replicated = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())
    corpus_array = jax.make_array_from_callback(padded.shape, sharding, lambda i: padded[i])
    block = min(options.query_chunk, queries.shape[0])
    scores = np.zeros((queries.shape[0], k), np.float32)
    indices = np.zeros((queries.shape[0], k), np.int32)
    for start in range(0, queries.shape[0], block):
        part = np.zeros((block, queries.shape[1]), np.float32)
        part[: len(queries[start : start + block])] = queries[start : start + block]
        part = jax.make_array_from_callback(part.shape, replicated, lambda i, x=part: x[i])
        values, found = _search_block(corpus_array, part, mesh=mesh, k=k, chunk=chunk,
                                      num_valid=num_docs)  # fmt: skip
        stop = min(start + block, queries.shape[0])
        scores[start:stop] = np.asarray(values)[: stop - start]
        indices[start:stop] = np.asarray(found)[: stop - start]
    return scores, indices


def metrics(
    indices: np.ndarray, relevant: Sequence[Sequence[int]], options: RetrievalOptions
) -> dict[str, float]:
    """Accuracy, precision, recall, MRR, nDCG and MAP at the options' cut-offs, as
    sentence-transformers' ``InformationRetrievalEvaluator`` defines them (binary relevance).

    Args:
      indices: [num_queries, k] corpus indices, best first.
      relevant: per query, the indices of its relevant documents (at least one).

    Returns:
      "{score}_{metric}@{k}" -> mean over queries, e.g. "cosine_recall@10".
    """
    if len(relevant) != indices.shape[0] or any(len(r) == 0 for r in relevant):
        raise UserError("every query needs at least one relevant document")
    hits = np.stack(
        [np.isin(row, list(docs)) for row, docs in zip(indices, relevant, strict=True)]
    )  # [queries, k]
    num_relevant = np.array([len(set(docs)) for docs in relevant])  # [queries]
    discount = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))  # [k]
    rank = np.arange(1, hits.shape[1] + 1)
    name, out = options.score, {}
    for k in options.accuracy_at:
        correct = hits[:, :k].sum(1)
        out[f"{name}_accuracy@{k}"] = float(np.mean(correct > 0))
        out[f"{name}_precision@{k}"] = float(np.mean(correct / k))
        out[f"{name}_recall@{k}"] = float(np.mean(correct / num_relevant))
    for k in options.mrr_at:
        first = np.where(hits[:, :k].any(1), 1.0 / (1 + hits[:, :k].argmax(1)), 0.0)
        out[f"{name}_mrr@{k}"] = float(np.mean(first))
    for k in options.ndcg_at:
        dcg = (hits[:, :k] * discount[:k]).sum(1)
        ideal = np.array([np.sum(1.0 / np.log2(np.arange(2, min(n, k) + 2))) for n in num_relevant])
        out[f"{name}_ndcg@{k}"] = float(np.mean(dcg / ideal))
    for k in options.map_at:
        precision = np.cumsum(hits[:, :k], axis=1) / rank[:k]
        average = (precision * hits[:, :k]).sum(1) / np.minimum(k, num_relevant)
        out[f"{name}_map@{k}"] = float(np.mean(average))
    return out


def evaluate(
    encode: Callable[[Sequence[str]], np.ndarray],
    data: RetrievalSet,
    options: RetrievalOptions,
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Embeds the queries and the corpus with `encode`, searches, and scores the ranking.

    Args:
      encode: texts -> [len(texts), dims] embeddings (e.g. bert.jobs.sts.embed bound to a model).
      data: the queries, corpus and relevant documents.
      options: score, cut-offs and chunk sizes.
      mesh: the devices to split the corpus over (None: all).

    Returns:
      The metrics (see :func:`metrics`) and "queries", "corpus" counts.
    """
    query_embeddings = encode(list(data.queries))
    corpus_embeddings = encode(list(data.corpus))
    _, indices = search(query_embeddings, corpus_embeddings, options.max_k, options, mesh)
    return {**metrics(indices, data.relevant, options), "queries": float(len(data.queries)),
            "corpus": float(len(data.corpus))}  # fmt: skip
