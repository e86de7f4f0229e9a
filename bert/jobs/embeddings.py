"""The sentence-embedding training job (`config.task = "embeddings"`, configs/embeddings.py).

A bi-encoder (bert/biencoder.py: one shared encoder over each side of a pair or triplet,
mean / CLS / max pooling, optional L2 normalisation) starts from any checkpoint `init_from`
takes and is trained with a sentence-transformers loss (bert/embedding_losses.py: multiple-negatives
ranking with in-batch and hard negatives, CoSENT, cosine regression, each optionally under
Matryoshka). Training goes through the fine-tuning machinery (bert/finetuning/: seeded
row order, the texts packed into shared rows (config.train.pack, batches.PackedSides) or cut to
length buckets, sharding, checkpoints, exact resume). The STS dev file, when given,
is scored (Spearman and Pearson of the cosine, in 0-1 as every metric) every
train.eval_every steps and at the end. The workdir's parameters are an encoder's:
configs/sts.py evaluates and encodes with `init_from=WORKDIR`.

The negatives of the ranking loss are every row of the global batch, across devices and hosts
(see bert/embedding_losses.py); gradient accumulation would cut them to a micro-batch, so
train.accumulation_steps must be 1.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bert import embedding_losses, pretrained
from bert.biencoder import BertBiEncoder
from bert.finetuning import finetune
from bert.finetuning.spec import EvalSet, Spec
from bert.heads import POOLINGS, BertForSentenceEmbedding
from bert.jobs import settings
from bert.jobs import sts as sts_job
from bert.tasks import metrics, pairs, retrieval, retrieval_data, squad_pairs, sts
from bert.tasks.features import ENCODER_INPUTS
from util.errors import UserError

SCORED_LOSSES = ("cosent", "cosine")


def side_keys(sides: int) -> tuple[str, ...]:
    """The batch keys of a bi-encoder with `sides` texts per row: text0_input_ids, ..."""
    return tuple(f"text{i}_{key}" for i in range(sides) for key in ENCODER_INPUTS)


def loss_sums(loss: embedding_losses.LossFn) -> Callable:
    """A Spec loss: (embeddings [batch, sides, dim], batch) -> {"loss": (sum, count)},
    the sum being the batch's mean loss times its rows (so the step's division gives it back)."""

    def sums(embeddings: jax.Array, batch: dict[str, jax.Array]):
        count = jnp.float32(embeddings.shape[0])
        return {"loss": (loss(embeddings, batch["label"]) * count, count)}

    return sums


def read_training(config) -> tuple[list[list[str]], np.ndarray | None]:
    """The training texts, one list per side, and the scores of scored pairs (else None).

    A SQuAD file gives (question, passage) pairs from all but its last
    `config.retrieval.held_out_articles` articles, so that the held-out ones can be the
    retrieval set; other files are read by bert/tasks/pairs.py as `config.train_kind`.
    """
    if not config.train_file:
        raise UserError("config.train_file is empty: give the training pairs")
    if config.train_format not in pairs.FORMATS:
        raise UserError(f"config.train_format={config.train_format!r} is not one of "
                        f"{', '.join(pairs.FORMATS)}")  # fmt: skip
    if config.train_format == "squad":
        data = squad_pairs.split_by_article(
            config.train_file, config.retrieval.held_out_articles, config.train_passage
        )[0]
    else:
        data = pairs.read_pairs(config.train_file, config.train_kind, config.train_columns,
                                config.train_format, passage=config.train_passage)  # fmt: skip
    sides = [list(data.anchors), list(data.positives)]
    if data.negatives is not None:
        sides.append(list(data.negatives))
    scores = None if data.scores is None else np.array(data.scores, np.float32)
    return sides, scores


def training_features(
    tokenizer, sides: Sequence[Sequence[str]], labels: np.ndarray, max_seq_length: int
) -> dict[str, np.ndarray]:
    """Each side as [CLS] text [SEP] under its side_keys, and "label" float32 [rows]."""
    arrays = {}
    for i, texts in enumerate(sides):
        encoded = sts.sentence_features(tokenizer, texts, max_seq_length)
        arrays.update({f"text{i}_{k}": v for k, v in encoded.items()})
    return {**arrays, "label": labels.astype(np.float32)}


def sts_eval_set(path: str, tokenizer, config) -> EvalSet:
    """STS dev pairs: Spearman and Pearson (0-1) of the embeddings' cosine against the scores."""
    pairs = sts_job.read_pairs(path)
    pairs = settings.limited(pairs, config.eval_limit, config)
    sentences = [p.sentence1 for p in pairs] + [p.sentence2 for p in pairs]
    inputs = sts.sentence_features(tokenizer, sentences, config.max_seq_length)
    gold = np.array([p.score for p in pairs], np.float64)

    def finish(outputs: np.ndarray, write: bool) -> dict[str, float]:
        del write
        # on the host: no program compiled for each evaluation set's shape
        first = retrieval.normalized(outputs[: len(pairs)])
        second = retrieval.normalized(outputs[len(pairs) :])
        cosine = np.sum(first * second, axis=-1)
        return {
            "spearman": metrics.spearman(cosine, gold),
            "pearson": metrics.pearson(cosine, gold),
        }

    return EvalSet("sts_dev", inputs, finish)


def retrieval_eval_set(data: retrieval_data.RetrievalSet, tokenizer, config) -> EvalSet:
    """Queries ranked against the corpus: sentence-transformers' IR metrics (recall@k, MRR@10,
    nDCG@10, ...; bert/tasks/retrieval.py)."""
    options = sts_job.retrieval_options(config.retrieval)
    texts = list(data.queries) + list(data.corpus)
    inputs = sts.sentence_features(tokenizer, texts, config.max_seq_length)

    def finish(outputs: np.ndarray, write: bool) -> dict[str, float]:
        del write
        queries, corpus = outputs[: len(data.queries)], outputs[len(data.queries) :]
        _, indices = retrieval.search(queries, corpus, options.max_k, options)
        return retrieval.metrics(indices, data.relevant, options)

    return EvalSet("retrieval", inputs, finish)


def eval_sets(config, tokenizer) -> list[EvalSet]:
    """STS dev (config.eval_file) and retrieval (config.retrieval), where configured."""
    evals = [sts_eval_set(config.eval_file, tokenizer, config)] if config.eval_file else []
    r = config.retrieval
    if r.squad_file or r.corpus_file or r.queries_file or r.qrels_file:
        data = sts_job.read_retrieval_set(r)
        evals.append(retrieval_eval_set(data, tokenizer, config))
    return evals


def make_loss(config, hidden_size: int) -> embedding_losses.LossFn:
    """The configured loss; config errors name their fields."""
    if config.loss not in embedding_losses.LOSSES:
        raise UserError(
            f"config.loss={config.loss!r} is not one of {', '.join(embedding_losses.LOSSES)}"
        )
    dims, weights = tuple(config.matryoshka_dims), tuple(config.matryoshka_weights)
    if any(d <= 0 or d > hidden_size for d in dims):
        raise UserError(
            f"config.matryoshka_dims={dims}: each must be in 1..{hidden_size} (the model's width)"
        )
    if weights and len(weights) != len(dims):
        raise UserError(
            f"config.matryoshka_weights has {len(weights)} entries for {len(dims)} matryoshka_dims"
        )
    return embedding_losses.make(config.loss, config.scale, config.symmetric, dims, weights)


def _check(config) -> None:
    if config.pooling and config.pooling not in POOLINGS:
        raise UserError(f"config.pooling={config.pooling!r} is not one of {', '.join(POOLINGS)}")
    if config.train.accumulation_steps != 1:
        raise UserError(
            f"config.train.accumulation_steps={config.train.accumulation_steps}: must be 1 for "
            "embedding losses (a micro-batch would see only its own rows as negatives)"
        )


def make_spec(
    config, given: pretrained.Pretrained | None = None
) -> tuple[Spec, pretrained.Pretrained]:
    """(the job's Spec, the pretrained encoder) from its config (the encoder `given` in memory,
    else config.init_from's)."""
    _check(config)
    encoder = settings.encoder(config, given)
    loss = make_loss(config, encoder.config.hidden_size)
    sides, scores = read_training(config)
    if scores is None and config.loss in SCORED_LOSSES:
        raise UserError(f"config.loss={config.loss!r} needs scored pairs; the data has none")
    labels = np.zeros(len(sides[0]), np.float32) if scores is None else scores / config.score_scale
    keep = settings.limit_indices(len(labels), config.train_limit, config)
    sides, labels = [[side[i] for i in keep] for side in sides], labels[keep]
    train = training_features(encoder.tokenizer, sides, labels, config.max_seq_length)
    logging.info("embeddings: %d training rows of %d texts", len(train["label"]), len(sides))
    evals = eval_sets(config, encoder.tokenizer)
    pooling = config.pooling or encoder.pooling or "mean"
    logging.info("embeddings: %s pooling, normalize %s", pooling, config.normalize)
    spec = Spec(
        task="embeddings",
        model=BertBiEncoder(encoder.config, pooling, config.normalize),
        loss=loss_sums(loss),
        label_keys=("label",),
        train=train,
        evals=evals,
        input_keys=side_keys(len(sides)),
        eval_model=BertForSentenceEmbedding(encoder.config, pooling, config.normalize),
        eval_input_keys=ENCODER_INPUTS,
        # config.train.pack: the sides' texts packed into shared rows
        packed_model=BertBiEncoder(encoder.config, pooling, config.normalize, packed=True),
        # what the STS job, init_from and the sentence-transformers export read back
        recorded={
            "pooling": pooling,
            "normalize": bool(config.normalize),
            "max_seq_length": config.max_seq_length,
        },  # fmt: skip
        row_texts=text_ids(sides) if config.train.no_duplicates else None,
        mini_batch_size=config.mini_batch_size,
    )
    return spec, encoder


def text_ids(sides: Sequence[Sequence[str]]) -> np.ndarray:
    """[rows, sides] int64: one id per distinct text, across every side."""
    ids: dict[str, int] = {}
    columns = [[ids.setdefault(text, len(ids)) for text in side] for side in sides]
    return np.array(columns, np.int64).T


def run(config, workdir: str, encoder: pretrained.Pretrained | None = None) -> dict:
    """Trains the bi-encoder and evaluates it; returns {"step": ..., "sts_dev": {...},
    "retrieval": {...}} (the evaluations configured). `encoder`: the encoder to start from, in
    memory; None: config.init_from's."""
    spec, encoder = make_spec(config, encoder)
    return finetune.run(spec, encoder, settings.finetuning(config), workdir)
