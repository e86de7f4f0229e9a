"""The sentence-embedding job (`config.task = "sts"`, configs/sts.py): evaluate a checkpoint's
embeddings (bert/embed.py) on STS (cosine similarity against gold scores) or on retrieval
(recall, MRR, nDCG over a corpus), or encode a text file to a .npy matrix; `evaluate` and
`evaluate_retrieval` serve the training job (embeddings.py) too."""

import functools
import io

import numpy as np
from absl import logging

from bert import embed, pretrained
from bert.heads import POOLINGS
from bert.jobs.settings import check_positions
from bert.tasks import metrics, retrieval, retrieval_data, squad_pairs, sts
from bert.training import reporting
from util import atomic, paths, text_files
from util.errors import UserError


def read_pairs(path: str) -> list[sts.Pair]:
    """STS benchmark `.csv` (tab-separated) or a GLUE STS-B `.tsv` with a header."""
    if not path:
        raise UserError("config.eval_file is empty: give an STS benchmark .csv or STS-B .tsv")
    if paths.path(path).suffix == ".tsv":
        return sts.read_glue_stsb(path, labeled=True)
    return sts.read_sts_benchmark(path)


def settings(
    model: pretrained.Pretrained, pooling: str, normalize: bool | None
) -> tuple[str, bool]:
    """(pooling, normalize): the config's where set (pooling non-empty, normalize not None),
    else what the checkpoint records, else mean pooling and normalised."""
    pooling = pooling or model.pooling or "mean"
    if normalize is None:
        normalize = True if model.normalize is None else model.normalize
    return pooling, normalize


def evaluate(model: pretrained.Pretrained, pairs: list[sts.Pair], config) -> dict[str, float]:
    """Spearman and Pearson (0-1, as every metric) of the embeddings' cosine similarity against
    the scores, pooled as `config.pooling` says (empty: the checkpoint's, see `settings`)."""
    pooling, _ = settings(model, config.pooling, config.normalize)
    options = dict(max_seq_length=config.max_seq_length, batch_size=config.eval_batch_size,
                   pooling=pooling,
                   pad_to_multiple_of=config.pad_to_multiple_of)  # fmt: skip
    first = embed.embed(model, [p.sentence1 for p in pairs], normalize=True, **options)
    second = embed.embed(model, [p.sentence2 for p in pairs], normalize=True, **options)
    cosine = np.sum(first * second, axis=-1)
    gold = np.array([p.score for p in pairs], np.float64)
    return {
        "spearman": metrics.spearman(cosine, gold),
        "pearson": metrics.pearson(cosine, gold),
        "pairs": float(len(pairs)),
    }


def _cutoffs(value, field: str) -> tuple[int, ...]:
    values = (value,) if isinstance(value, int) else tuple(value)
    if not values or not all(isinstance(v, int) for v in values):
        raise UserError(f"config.retrieval.{field}={value!r} must be integers, e.g. (1, 5, 10)")
    return values


def retrieval_options(section) -> retrieval.RetrievalOptions:
    """The search and metric options of a `retrieval` config section (configs/sts.py)."""
    return retrieval.RetrievalOptions(
        score=section.score,
        accuracy_at=_cutoffs(section.accuracy_at, "accuracy_at"),
        mrr_at=_cutoffs(section.mrr_at, "mrr_at"),
        ndcg_at=_cutoffs(section.ndcg_at, "ndcg_at"),
        map_at=_cutoffs(section.map_at, "map_at"),
        corpus_chunk=section.corpus_chunk,
        query_chunk=section.query_chunk,
    )


def read_retrieval_set(section) -> retrieval_data.RetrievalSet:
    """The retrieval set a `retrieval` config section names: a SQuAD file's held-out
    articles, or BEIR-layout corpus, queries and qrels files."""
    beir = (section.corpus_file, section.queries_file, section.qrels_file)
    if section.squad_file and any(beir):
        raise UserError("config.retrieval: give squad_file or corpus/queries/qrels files, not both")
    if section.squad_file:
        return squad_pairs.split_by_article(section.squad_file, section.held_out_articles)[1]
    if not all(beir):
        raise UserError("config.retrieval: give squad_file, or all of corpus_file, "
                        "queries_file and qrels_file")  # fmt: skip
    return retrieval_data.read_beir(*beir)


def evaluate_retrieval(
    model: pretrained.Pretrained, data: retrieval_data.RetrievalSet, config, mesh=None
) -> dict[str, float]:
    """Retrieval metrics of `model`'s embeddings on `data` (see bert.tasks.retrieval.metrics).

    Args:
      model: the checkpoint (its `encoder` params are the ones used).
      data: queries, corpus and relevant documents.
      config: a config with this job's embedding fields (`max_seq_length`, `eval_batch_size`,
        `pooling`, `normalize` (empty / None: the checkpoint's, see `settings`),
        `pad_to_multiple_of`) and a `retrieval` section.
      mesh: the devices the corpus is split over (None: all).
    """
    pooling, normalize = settings(model, config.pooling, config.normalize)
    encode = functools.partial(embed.embed, model, max_seq_length=config.max_seq_length,
                               batch_size=config.eval_batch_size, pooling=pooling,
                               normalize=normalize,
                               pad_to_multiple_of=config.pad_to_multiple_of)  # fmt: skip
    return retrieval.evaluate(encode, data, retrieval_options(config.retrieval), mesh)


def _write_results(out, name: str, results: dict[str, float]) -> None:
    writer = reporting.make_writer(out)
    writer.write_scalars(0, {f"{name}/{k}": v for k, v in results.items()})
    writer.flush()
    atomic.write_json(out / f"{name}_results.json", results)


def read_sentences(path: str) -> list[str]:
    """One sentence per line (blank lines kept as empty sentences, so rows match lines)."""
    if not path:
        raise UserError("config.encode_input is empty: give a text file, one sentence per line")
    try:  # bytes that are not UTF-8, or a NUL byte: a UserError naming the line
        return [line.rstrip("\r\n") for _, line in text_files.lines(path)]
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (config.encode_input)") from None


def run(config, workdir: str) -> dict[str, float]:
    """Runs the job; returns the metrics (mode=evaluate, retrieval) or the matrix shape
    (mode=encode)."""
    out = paths.path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    if not config.init_from:
        raise UserError("config.init_from is empty: give a checkpoint directory")
    if config.pooling and config.pooling not in POOLINGS:
        raise UserError(f"config.pooling={config.pooling!r} is not one of {', '.join(POOLINGS)}")
    if config.mode == "retrieval":  # bad files or options stop the run before the model loads
        data = read_retrieval_set(config.retrieval)
        retrieval_options(config.retrieval)
    model = pretrained.load(config.init_from, config.tokenizer)
    check_positions(config.max_seq_length, model)
    pooling, normalize = settings(model, config.pooling, config.normalize)
    logging.info("pooling %s, normalize %s", pooling, normalize)
    if config.mode == "evaluate":
        results = evaluate(model, read_pairs(config.eval_file), config)
        _write_results(out, "sts", results)
        logging.info("STS %s: %s", config.eval_file, results)
        return results
    if config.mode == "retrieval":
        results = evaluate_retrieval(model, data, config)
        _write_results(out, "retrieval", results)
        logging.info("retrieval: %s", results)
        return results
    sentences = read_sentences(config.encode_input)
    matrix = embed.embed(model, sentences, max_seq_length=config.max_seq_length,
                   batch_size=config.eval_batch_size, pooling=pooling, normalize=normalize,
                   pad_to_multiple_of=config.pad_to_multiple_of)  # fmt: skip
    buffer = io.BytesIO()
    np.save(buffer, matrix)
    atomic.write_atomically(out / config.encode_output, buffer.getvalue())
    logging.info("wrote %s %s", out / config.encode_output, matrix.shape)
    return {"rows": float(matrix.shape[0]), "dims": float(matrix.shape[1])}
