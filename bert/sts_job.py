"""The sentence-embedding job (`config.task = "sts"`, configs/sts.py): evaluate a checkpoint's
embeddings on STS (cosine similarity vs gold scores), or encode a text file to a .npy matrix."""

import os
import pathlib

import numpy as np
from absl import logging

from bert import encode, reporting
from bert.tasks import metrics, sts


def read_pairs(path: str) -> list[sts.Pair]:
    """STS benchmark `.csv` (tab-separated) or a GLUE STS-B `.tsv` with a header."""
    if not path:
        raise ValueError("config.eval_file is empty: give an STS benchmark .csv or STS-B .tsv")
    if pathlib.Path(path).suffix == ".tsv":
        return sts.read_glue_stsb(path, labeled=True)
    return sts.read_sts_benchmark(path)


def evaluate(encoder: encode.Encoder, pairs: list[sts.Pair], config) -> dict[str, float]:
    """Spearman and Pearson (x100) of the embeddings' cosine similarity against the scores."""
    options = dict(max_length=config.max_length, batch_size=config.batch_size,
                   pooling=config.pooling)  # fmt: skip
    first = encode.embed(encoder, [p.sentence1 for p in pairs], normalize=True, **options)
    second = encode.embed(encoder, [p.sentence2 for p in pairs], normalize=True, **options)
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
        raise ValueError("config.encode_input is empty: give a text file, one sentence per line")
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found (config.encode_input)") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 at byte {e.start}") from None


def run(config, workdir: str) -> dict[str, float]:
    """Runs the job; returns the metrics (mode=evaluate) or the matrix shape (mode=encode)."""
    out = pathlib.Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    if not config.init_from:
        raise ValueError("config.init_from is empty: give a checkpoint directory")
    encoder = encode.load_encoder(config.init_from, config.tokenizer or None)
    if config.mode == "evaluate":
        results = evaluate(encoder, read_pairs(config.eval_file), config)
        writer = reporting.make_writer(out)
        writer.write_scalars(0, {f"sts/{k}": v for k, v in results.items()})
        writer.flush()
        reporting.write_json_atomically(out / "sts_results.json", results)
        logging.info("STS %s: %s", config.eval_file, results)
        return results
    sentences = read_sentences(config.encode_input)
    matrix = encode.embed(encoder, sentences, max_length=config.max_length,
                          batch_size=config.batch_size, pooling=config.pooling,
                          normalize=config.normalize)  # fmt: skip
    target = out / config.encode_output
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}.npy")
    np.save(tmp, matrix)
    tmp.replace(target)
    logging.info("wrote %s %s", target, matrix.shape)
    return {"rows": float(matrix.shape[0]), "dims": float(matrix.shape[1])}
