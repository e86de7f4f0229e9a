"""The sentence-embedding job (`config.task = "sts"`, configs/sts.py): evaluate a checkpoint's
embeddings on STS (cosine similarity against gold scores), or encode a text file to a .npy
matrix; and `embed`, which turns sentences into embeddings with any loaded checkpoint."""

import functools
import io
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging

from bert import pretrained
from bert.heads import POOLINGS, BertForSentenceEmbedding
from bert.model import BertConfig
from bert.tasks import features, metrics, sts
from bert.training import reporting
from input_pipeline import atomic, paths, text_files
from input_pipeline.errors import UserError


@functools.partial(jax.jit, static_argnames=("config", "pooling", "normalize"))
def _embed_batch(params, ids, segments, mask, *, config: BertConfig, pooling: str, normalize: bool):
    model = BertForSentenceEmbedding(config, pooling, normalize)
    return model.apply({"params": {"bert": params}}, ids, segments, mask)  # [batch, embed]


def embed(
    model: pretrained.Pretrained,
    sentences: Sequence[str],
    max_seq_length: int = 256,
    batch_size: int = 64,
    pooling: str = "mean",
    normalize: bool = True,
    pad_to_multiple_of: int = 16,
) -> np.ndarray:
    """Embeddings [len(sentences), embed] as float32.

    Sentences are tokenized as [CLS] text [SEP], truncated to `max_seq_length`, sorted by length
    and padded per batch to a multiple of `pad_to_multiple_of` (few compiled shapes, little
    padding; 0: every batch at `max_seq_length`).
    """
    tok = model.tokenizer
    encoded = []
    for ids in tok.encode_batch_ids(list(sentences)):
        ids, _ = tok.build_inputs(ids[: max_seq_length - 2])
        encoded.append(ids)
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    out = np.zeros((len(encoded), model.config.hidden_size), np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        longest = max(len(encoded[i]) for i in chunk)
        length = features.bucket_length(longest, pad_to_multiple_of, max_seq_length)
        ids = np.full((batch_size, length), tok.pad_id, np.int32)
        mask = np.zeros((batch_size, length), np.int32)
        for row, i in enumerate(chunk):
            ids[row, : len(encoded[i])] = encoded[i]
            mask[row, : len(encoded[i])] = 1
        vectors = _embed_batch(
            model.encoder, ids, np.zeros_like(ids), mask,
            config=model.config, pooling=pooling, normalize=normalize,
        )  # fmt: skip
        out[chunk] = np.asarray(vectors)[: len(chunk)]
    return out


def read_pairs(path: str) -> list[sts.Pair]:
    """STS benchmark `.csv` (tab-separated) or a GLUE STS-B `.tsv` with a header."""
    if not path:
        raise UserError("config.eval_file is empty: give an STS benchmark .csv or STS-B .tsv")
    if paths.path(path).suffix == ".tsv":
        return sts.read_glue_stsb(path, labeled=True)
    return sts.read_sts_benchmark(path)


def evaluate(model: pretrained.Pretrained, pairs: list[sts.Pair], config) -> dict[str, float]:
    """Spearman and Pearson (x100) of the embeddings' cosine similarity against the scores."""
    options = dict(max_seq_length=config.max_seq_length, batch_size=config.eval_batch_size,
                   pooling=config.pooling,
                   pad_to_multiple_of=config.pad_to_multiple_of)  # fmt: skip
    first = embed(model, [p.sentence1 for p in pairs], normalize=True, **options)
    second = embed(model, [p.sentence2 for p in pairs], normalize=True, **options)
    cosine = np.sum(first * second, axis=-1)
    gold = np.array([p.score for p in pairs], np.float64)
    return {
        "spearman": 100 * metrics.spearman(cosine, gold),
        "pearson": 100 * metrics.pearson(cosine, gold),
        "pairs": float(len(pairs)),
    }


def read_sentences(path: str) -> list[str]:
    """One sentence per line (blank lines kept as empty sentences, so rows match lines)."""
    if not path:
        raise UserError("config.encode_input is empty: give a text file, one sentence per line")
    try:  # bytes that are not UTF-8, or a NUL byte: a UserError naming the line
        return [line.rstrip("\r\n") for _, line in text_files.lines(path)]
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (config.encode_input)") from None


def run(config, workdir: str) -> dict[str, float]:
    """Runs the job; returns the metrics (mode=evaluate) or the matrix shape (mode=encode)."""
    out = paths.path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    if not config.init_from:
        raise UserError("config.init_from is empty: give a checkpoint directory")
    if config.pooling not in POOLINGS:
        raise UserError(f"config.pooling={config.pooling!r} is not one of {', '.join(POOLINGS)}")
    model = pretrained.load(config.init_from, config.tokenizer)
    if config.mode == "evaluate":
        results = evaluate(model, read_pairs(config.eval_file), config)
        writer = reporting.make_writer(out)
        writer.write_scalars(0, {f"sts/{k}": v for k, v in results.items()})
        writer.flush()
        atomic.write_json(out / "sts_results.json", results)
        logging.info("STS %s: %s", config.eval_file, results)
        return results
    sentences = read_sentences(config.encode_input)
    matrix = embed(model, sentences, max_seq_length=config.max_seq_length,
                   batch_size=config.eval_batch_size, pooling=config.pooling,
                   normalize=config.normalize,
                   pad_to_multiple_of=config.pad_to_multiple_of)  # fmt: skip
    buffer = io.BytesIO()
    np.save(buffer, matrix)
    atomic.write_atomically(out / config.encode_output, buffer.getvalue())
    logging.info("wrote %s %s", out / config.encode_output, matrix.shape)
    return {"rows": float(matrix.shape[0]), "dims": float(matrix.shape[1])}
