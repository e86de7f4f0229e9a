"""Brute-force retrieval and its metrics: equal to a direct numpy computation and to
sentence-transformers' InformationRetrievalEvaluator on the same embeddings, and the same
top k on an 8-device mesh as on one device."""

import jax
import numpy as np
import pytest
import torch
from sentence_transformers.sentence_transformer.evaluation import (
    InformationRetrievalEvaluator,
)
from sentence_transformers.util import cos_sim, dot_score

from bert.tasks import retrieval
from util.errors import UserError


def options(score="cosine", corpus_chunk=16, query_chunk=8, **cutoffs):
    cutoffs = {"accuracy_at": (1, 3, 5, 10), "mrr_at": (10,), "ndcg_at": (10,),
               "map_at": (100,), **cutoffs}  # fmt: skip
    return retrieval.RetrievalOptions(score, corpus_chunk=corpus_chunk, query_chunk=query_chunk,
                                      **cutoffs)  # fmt: skip


def random_set(num_queries=37, num_docs=203, dims=24, seed=0):
    rng = np.random.default_rng(seed)
    queries = rng.normal(size=(num_queries, dims)).astype(np.float32)
    corpus = rng.normal(size=(num_docs, dims)).astype(np.float32) * rng.uniform(
        0.5, 2.0, size=(num_docs, 1)
    ).astype(np.float32)  # unequal norms: cosine and dot rank differently
    relevant = [tuple(rng.choice(num_docs, size=rng.integers(1, min(15, num_docs)), replace=False))
                for _ in range(num_queries)]  # fmt: skip
    for q, docs in enumerate(relevant):  # make the first relevant document similar
        corpus[docs[0]] = queries[q] + 0.7 * rng.normal(size=dims).astype(np.float32)
    return queries, corpus, relevant


def numpy_scores(queries, corpus, score):
    q, c = queries.astype(np.float64), corpus.astype(np.float64)
    if score == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
    return q @ c.T


def numpy_metrics(ranking, relevant, k):
    """Direct per-query loops over the definitions (binary relevance)."""
    acc, prec, rec, rr, ndcg, ap = [], [], [], [], [], []
    for order, docs in zip(ranking, relevant, strict=True):
        docs = set(docs)
        top = list(order[:k])
        hits = [d in docs for d in top]
        acc.append(float(any(hits)))
        prec.append(sum(hits) / k)
        rec.append(sum(hits) / len(docs))
        rr.append(next((1 / (i + 1) for i, h in enumerate(hits) if h), 0.0))
        dcg = sum(1 / np.log2(i + 2) for i, h in enumerate(hits) if h)
        ndcg.append(dcg / sum(1 / np.log2(i + 2) for i in range(min(len(docs), k))))
        found, total = 0, 0.0
        for i, h in enumerate(hits):
            if h:
                found += 1
                total += found / (i + 1)
        ap.append(total / min(k, len(docs)))
    return {name: float(np.mean(v)) for name, v in
            zip(("accuracy", "precision", "recall", "mrr", "ndcg", "map"),
                (acc, prec, rec, rr, ndcg, ap), strict=True)}  # fmt: skip


@pytest.mark.parametrize("score", ["cosine", "dot"])
def test_search_and_metrics_equal_numpy(score):
    queries, corpus, relevant = random_set()
    full = numpy_scores(queries, corpus, score)
    want_order = np.argsort(-full, axis=1, kind="stable")
    opts = options(score)
    values, indices = retrieval.search(queries, corpus, 100, opts)
    np.testing.assert_array_equal(indices, want_order[:, :100])
    np.testing.assert_allclose(values, np.take_along_axis(full, want_order[:, :100], 1),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    got = retrieval.metrics(indices, relevant, opts)
    for k in (1, 3, 5, 10, 100):
        want = numpy_metrics(want_order, relevant, k)
        for metric, value in want.items():
            key = f"{score}_{metric}@{k}"
            if key in got:
                assert got[key] == pytest.approx(value, abs=1e-12), key
    assert {f"{score}_recall@{k}" for k in (1, 5, 10)} <= set(got)
    assert 0.3 < got[f"{score}_accuracy@1"] < 0.95  # neither trivial nor hopeless


class FixedModel:
    """What the evaluator asks of a model: embeddings of given texts (looked up)."""

    def __init__(self, table):
        self.table = table
        self.model_card_data = self  # the evaluator records its metrics there

    def set_evaluation_metrics(self, *args):
        pass

    def encode_query(self, sentences, **kwargs):
        return torch.tensor(np.stack([self.table[s] for s in sentences]))

    encode_document = encode_query


@pytest.mark.parametrize("score", ["cosine", "dot"])
def test_metrics_equal_sentence_transformers_evaluator(score):
    queries, corpus, relevant = random_set(num_queries=41, num_docs=150, seed=1)
    table = {f"q{i}": v for i, v in enumerate(queries)} | {f"d{i}": v for i, v in enumerate(corpus)}
    evaluator = InformationRetrievalEvaluator(
        queries={f"q{i}": f"q{i}" for i in range(len(queries))},
        corpus={f"d{i}": f"d{i}" for i in range(len(corpus))},
        relevant_docs={f"q{i}": {f"d{d}" for d in docs} for i, docs in enumerate(relevant)},
        corpus_chunk_size=64,
        score_functions={score: cos_sim if score == "cosine" else dot_score},
    )
    want = evaluator(FixedModel(table))
    opts = options(score, corpus_chunk=7, query_chunk=16)
    got = retrieval.evaluate(lambda texts: np.stack([table[t] for t in texts]),
                             _data(queries, corpus, relevant), opts)  # fmt: skip
    assert set(want) == set(got) - {"queries", "corpus"}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def _data(queries, corpus, relevant):
    from bert.tasks.retrieval_data import RetrievalSet

    return RetrievalSet(
        queries=tuple(f"q{i}" for i in range(len(queries))),
        query_ids=tuple(f"q{i}" for i in range(len(queries))),
        corpus=tuple(f"d{i}" for i in range(len(corpus))),
        corpus_ids=tuple(f"d{i}" for i in range(len(corpus))),
        relevant=tuple(tuple(int(d) for d in docs) for docs in relevant),
    )


@pytest.mark.parametrize("num_docs", [203, 13])
def test_eight_device_mesh_gives_the_single_device_top_k(num_docs):
    assert len(jax.devices()) == 8
    queries, corpus, _ = random_set(num_queries=19, num_docs=num_docs, seed=2)
    opts = options("cosine", corpus_chunk=5, query_chunk=7)
    one = retrieval.search(queries, corpus, 10, opts, retrieval.corpus_mesh(jax.devices()[:1]))
    eight = retrieval.search(queries, corpus, 10, opts, retrieval.corpus_mesh(jax.devices()))
    np.testing.assert_array_equal(eight[1], one[1])
    np.testing.assert_allclose(eight[0], one[0], rtol=1e-6)
    want = np.argsort(-numpy_scores(queries, corpus, "cosine"), axis=1, kind="stable")
    np.testing.assert_array_equal(one[1], want[:, :10])


def test_ties_go_to_the_lower_corpus_index_and_small_corpora():
    corpus = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [1.0, 0.0]], np.float32)
    queries = np.array([[1.0, 0.0]], np.float32)
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = retrieval.corpus_mesh(devices)
        _, indices = retrieval.search(queries, corpus, 10, options(corpus_chunk=2), mesh)
        assert indices.tolist() == [[0, 2, 3, 4, 1]]  # cosine: four ties, then the orthogonal
        _, indices = retrieval.search(queries, corpus, 3, options("dot", corpus_chunk=2), mesh)
        assert indices.tolist() == [[3, 0, 2]]
    got = retrieval.metrics(np.array([[1, 0, 2]]), [(2, 4)], options(accuracy_at=(5,)))
    assert got["cosine_precision@5"] == pytest.approx(1 / 5)  # k is the divisor, as in ST
    assert got["cosine_recall@5"] == pytest.approx(1 / 2)


def test_bad_options_and_inputs():
    with pytest.raises(UserError, match="retrieval score 'l2'"):
        options("l2")
    with pytest.raises(UserError, match="cut-offs must be positive"):
        options(mrr_at=(0,))
    with pytest.raises(UserError, match="one width"):
        retrieval.search(np.zeros((2, 3)), np.zeros((4, 5)), 2, options())
    with pytest.raises(UserError, match="got 0 queries and 4 documents"):
        retrieval.search(np.zeros((0, 3)), np.ones((4, 3)), 2, options())
    with pytest.raises(UserError, match="at least one relevant"):
        retrieval.metrics(np.zeros((1, 2), np.int32), [()], options())


def test_two_processes_give_the_numpy_top_k():
    """The corpus split over the devices of two jax.distributed processes (2 each)."""
    import json  # noqa: PLC0415
    import pathlib  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = pathlib.Path(__file__).with_name("retrieval_worker.py")
    processes = [subprocess.Popen([sys.executable, str(worker), str(i), "2", str(port), "2"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]  # fmt: skip
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    rng = np.random.default_rng(3)  # the worker's data
    queries = rng.normal(size=(21, 16)).astype(np.float32)
    corpus = rng.normal(size=(101, 16)).astype(np.float32)
    want = np.argsort(-numpy_scores(queries, corpus, "cosine"), axis=1, kind="stable")[:, :10]
    for output in outputs:
        assert output["devices"] == 4
        np.testing.assert_array_equal(output["indices"], want)
