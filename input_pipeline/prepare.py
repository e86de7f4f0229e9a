"""Raw text -> tokenized, sharded TFRecord files plus `manifest.json` (also a CLI).

    python -m input_pipeline.prepare --input='wiki/AA/wiki_*' --output=data/wiki \\
        --format=wikiextractor --tokenizer=vocab.txt [--num_shards=N --workers=N]

Without ``--tokenizer``, ``--train_sentencepiece_vocab_size=N`` first trains a SentencePiece
model on a sample of the input, written into the output folder.

How it works:

* The parent process streams documents with `corpora.read_corpus` (paragraphs, no sentence
  split: reading is cheap) and cuts the stream into chunks of about ``chunk_chars``
  characters. A pool of worker processes (``spawn``: no fork after the tokenizer's threads)
  splits sentences, tokenizes each chunk with one ``encode_batch`` call (one thread per worker)
  and serialises the records and their TFRecord framing with numpy (`record_encoder`): no
  process imports TensorFlow. At most ``2 * workers`` chunks are in flight and one document is
  held by the reader, so memory is bounded by the chunk size (or the largest document), never
  by the corpus.
* Document ``i`` (counted in reading order) goes to shard ``i % num_shards``, and results are
  written in chunk order, so the same inputs and config give byte-identical shards whatever
  the number of workers or the chunk size.
* Shards are written under temporary names, synced and renamed; `manifest.json` is written
  last, the same way, with each shard's size and CRC-32C. A folder without a manifest, or
  whose manifest records another config, other inputs (path, size, mtime) or another tokenizer
  fingerprint (a trained tokenizer that is missing or damaged included), is cleaned (manifest
  first, then shards) and redone. A finished folder with a matching manifest is verified
  (``verify``: sizes and checksums, or sizes only) and a shard that is missing or damaged is
  rewritten alone, byte-identical to the original (`input_pipeline/shards.py`); the rest,
  the tokenizer included, is left alone. A trained tokenizer is retrained only when it is
  damaged or the inputs or settings changed.
* A user error (no file matching a glob, invalid UTF-8, malformed input) raises before any
  manifest is written; the CLI prints it and exits with status 1. Empty files and files of
  blank lines are skipped and counted in the manifest.
"""

import contextlib
import dataclasses
import fcntl
import functools
import inspect
import itertools
import logging
import math
import os
import pathlib
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from input_pipeline import corpora, prepare_args, record_encoder, shards, tokenizers
from input_pipeline import sentencepiece_training as sp_training
from input_pipeline.manifest import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    Manifest,
    load_manifest,
    manifest_path,
    sync_directory,
    write_manifest,
)
from input_pipeline.word_segmenter import check_name as check_segmenter
from util import console, paths
from util.errors import UserError

__all__ = ["Manifest", "is_complete", "load_manifest", "main", "prepare"]

PathLike = str | os.PathLike
SENTENCEPIECE_PREFIX = "sentencepiece"  # a trained model is DIR/sentencepiece.model
LOCK_NAME = ".prepare.lock"
_LOG = logging.getLogger(__name__)


def auto_num_shards(input_bytes: int) -> int:
    """The default shard count: one per 256 MiB of input, at least 16, at most 1024."""
    return min(1024, max(16, math.ceil(input_bytes / (256 << 20))))


def _input_identity(files: Sequence[pathlib.Path]) -> list[dict[str, Any]]:
    identity = []
    for f in files:
        identity.append({"path": str(paths.resolve(f))} | paths.identity(f))
    return identity


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything decided before any work: the inputs, the config and the tokenizer."""

    directory: pathlib.Path
    files: list[pathlib.Path]
    inputs: list[dict[str, Any]]
    config: dict[str, Any]
    tokenizer: tokenizers.Tokenizer | None  # None until a SentencePiece model is trained


def _plan(
    input_patterns: str | PathLike | Sequence[str | PathLike],
    output_dir: PathLike,
    format: str,
    tokenizer_path: PathLike | None,
    lowercase: bool | None,
    train_sentencepiece_vocab_size: int | None,
    sentencepiece_model_type: str,
    sentencepiece_sample_sentences: int,
    sentencepiece_lowercase: bool,
    num_shards: int | None,
    text_field: str,
    errors: str,
    sentence_split: bool,
    word_segmenter: str,
) -> _Plan:
    if format not in corpora.FORMATS:
        raise UserError(f"unknown corpus format {format!r}; expected one of {corpora.FORMATS}")
    if errors not in corpora.ERRORS:
        raise UserError(f"errors must be one of {corpora.ERRORS}, got {errors!r}")
    if (tokenizer_path is None) == (train_sentencepiece_vocab_size is None):
        raise ValueError("give exactly one of a tokenizer path or train_sentencepiece_vocab_size")
    if num_shards is not None and num_shards < 1:
        raise UserError(f"num_shards must be at least 1, got {num_shards}")
    files = corpora.expand_paths(input_patterns)
    inputs = _input_identity(files)
    if num_shards is None:
        num_shards = auto_num_shards(sum(i["bytes"] for i in inputs))
    config: dict[str, Any] = {"format": format, "errors": errors, "num_shards": num_shards}
    config |= {"sentence_split": sentence_split and format != "text"}
    if check_segmenter(word_segmenter, "word_segmenter"):  # absent when "": folders as before
        config["word_segmenter"] = word_segmenter
    config["text_field"] = text_field if format in corpora.TEXT_FIELD_FORMATS else None
    tokenizer = None
    if tokenizer_path is not None:
        if sentencepiece_lowercase:
            raise UserError(
                "sentencepiece_lowercase is for a SentencePiece model trained on the corpus; "
                f"the given tokenizer {tokenizer_path} keeps its own casing"
            )
        tokenizer = tokenizers.load_tokenizer(tokenizer_path, lowercase)
        # absolute, not resolve(): a file in the Hub cache is a link to a blob without its suffix
        config["tokenizer"] = {"path": str(paths.absolute(tokenizer.path)), "lowercase": lowercase}
    else:
        # Checked here, before anything in the output folder is touched.
        if sentencepiece_model_type not in sp_training.MODEL_TYPES:
            raise UserError(f"sentencepiece_model_type must be one of {sp_training.MODEL_TYPES}")
        if train_sentencepiece_vocab_size <= len(tokenizers.SPECIAL_TOKENS):
            raise UserError(
                f"the SentencePiece vocabulary size {train_sentencepiece_vocab_size} is too small"
            )
        if sentencepiece_sample_sentences < 1:
            raise UserError("sentencepiece_sample_sentences must be at least 1")
        config["tokenizer"] = {
            "train_sentencepiece": {
                "vocab_size": train_sentencepiece_vocab_size,
                "model_type": sentencepiece_model_type,
                "sample_sentences": sentencepiece_sample_sentences,
            }
        }
        if sentencepiece_lowercase:  # absent when off: cased folders prepared before still match
            config["tokenizer"]["train_sentencepiece"]["lowercase"] = True
    return _Plan(paths.path(output_dir), files, inputs, config, tokenizer)


def _mismatch(plan: _Plan) -> str | None:
    """Why ``plan.directory`` does not hold the output of ``plan`` (whose shards may still need
    a repair: see `shards.damaged`); None if it does."""
    try:
        manifest = load_manifest(plan.directory)
    except FileNotFoundError:
        return "no manifest (never prepared, or interrupted)"
    except ValueError as e:
        return f"unreadable manifest ({e})"
    if manifest.config != plan.config:
        changed = sorted(k for k in plan.config if plan.config[k] != manifest.config.get(k))
        return f"the config differs ({', '.join(changed) or 'fields'})"
    if manifest.inputs != plan.inputs:
        return "the input files differ (list, size or modification time)"
    if plan.tokenizer is not None:
        fingerprint = plan.tokenizer.fingerprint()
    else:
        try:
            fingerprint = tokenizers.load_tokenizer(manifest.tokenizer_path).fingerprint()
        except (FileNotFoundError, ValueError) as e:
            return f"the trained tokenizer is unusable ({e})"
    if fingerprint != manifest.fingerprint:
        return "the tokenizer fingerprint differs"
    return None


def _clean(directory: pathlib.Path) -> None:
    """Removes the manifest first, then shards and temporary files of earlier runs."""
    manifest_path(directory).unlink(missing_ok=True)
    for pattern in ("shard-*-of-*.tfrecord", ".shard-*.tmp", f".{MANIFEST_NAME}.*.tmp"):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(directory: pathlib.Path) -> Iterator[None]:
    """Holds an exclusive lock on ``directory`` so two runs never write the same shards (an
    object store has no locks: there, one run at a time is the user's to ensure)."""
    if paths.is_remote(directory):
        yield
        return
    with open(directory / LOCK_NAME, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another prepare run holds {directory / LOCK_NAME}") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_complete(
    input_patterns: str | PathLike | Sequence[str | PathLike],
    output_dir: PathLike,
    format: str,
    tokenizer_path: PathLike | None = None,
    **options: Any,
) -> bool:
    """Whether :func:`prepare` with the same arguments would find its work already done.

    Args:
      **options: any keyword options of :func:`prepare`, with the same defaults; those that do
        not decide the output or its verification (``workers``, ``chunk_chars``, ``force``)
        are ignored.
    """
    bound = inspect.signature(prepare).bind(
        input_patterns, output_dir, format, tokenizer_path, **options
    )
    bound.apply_defaults()
    names = inspect.signature(_plan).parameters
    plan = _plan(**{k: v for k, v in bound.arguments.items() if k in names})
    if _mismatch(plan) is not None:
        return False
    return not shards.damaged(load_manifest(plan.directory), bound.arguments["verify"])


def prepare(
    input_patterns: str | PathLike | Sequence[str | PathLike],
    output_dir: PathLike,
    format: str,
    tokenizer_path: PathLike | None = None,
    *,
    lowercase: bool | None = None,
    train_sentencepiece_vocab_size: int | None = None,
    sentencepiece_model_type: str = "unigram",
    sentencepiece_sample_sentences: int = 1_000_000,
    sentencepiece_lowercase: bool = False,
    num_shards: int | None = None,
    text_field: str = "text",
    errors: str = "strict",
    sentence_split: bool = True,
    word_segmenter: str = "",
    workers: int | None = None,
    chunk_chars: int = 1 << 20,
    verify: str = "checksum",
    force: bool = False,
) -> Manifest:
    """Tokenizes a corpus into sharded records and a manifest; does nothing if already done.

    Args:
      input_patterns: a glob, a path, or a list of them (see `corpora.expand_paths`).
      output_dir: the folder for shards and `manifest.json` (created if missing).
      format: "text", "paragraphs", "jsonl", "wikiextractor" or "parquet" (see `corpora`).
      tokenizer_path: a vocab.txt, tokenizer.json, SentencePiece .model, or a folder with one.
      lowercase: for a vocab.txt only (see `tokenizers.load_wordpiece`); None infers it.
      train_sentencepiece_vocab_size: instead of ``tokenizer_path``, train a SentencePiece
        model of this size into ``output_dir/sentencepiece.model`` first.
      sentencepiece_model_type: "unigram" or "bpe", for training.
      sentencepiece_sample_sentences: sentences sampled uniformly (seeded, so reproducibly)
        from the whole input to train on.
      sentencepiece_lowercase: train an uncased model: its normalisation (`LOWERCASE_RULE`,
        stored in the .model) folds case, in training and in every encoding with it.
      num_shards: number of shard files; None takes `auto_num_shards` of the input size.
      text_field: the JSON field or Parquet column holding the text ("jsonl", "parquet").
      errors: invalid UTF-8: "strict" (error), "replace" or "skip" (counted in the manifest).
      sentence_split: cut paragraphs into sentences (not for "text", which is split already).
      word_segmenter: "jieba": the word starts are jieba's Chinese words, for whole-word
        masking (`word_segmenter`); "": the tokenizer's own.
      workers: tokenizing processes; None uses every CPU this process may run on, 0 works in
        this process (no subprocess). The output does not depend on it.
      chunk_chars: characters of text per unit of work (a bigger document is one unit). The
        output does not depend on it.
      verify: "checksum" (sizes and CRC-32Cs of a finished folder's shards) or "size".
      force: redo the work even if a matching manifest exists.

    Returns:
      The manifest of the finished output.
    """
    started = time.perf_counter()
    plan = _plan(
        input_patterns, output_dir, format, tokenizer_path, lowercase,
        train_sentencepiece_vocab_size, sentencepiece_model_type, sentencepiece_sample_sentences,
        sentencepiece_lowercase, num_shards, text_field, errors, sentence_split, word_segmenter,
    )  # fmt: skip
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if workers < 0 or chunk_chars < 1:
        raise UserError(f"workers must be >= 0 and chunk_chars >= 1 ({workers}, {chunk_chars})")
    shards.check_verify(verify)
    plan.directory.mkdir(parents=True, exist_ok=True)
    with _locked(plan.directory):
        reason = "forced" if force else _mismatch(plan)
        tokenizer, trained = plan.tokenizer, plan.tokenizer is None
        if reason is None:
            manifest, tokenizer = _repair(plan, verify, workers, chunk_chars, started)
            if manifest is not None:
                return manifest
            reason = "a rewritten shard differed from its record (the tokenizer is kept)"
        _LOG.info("preparing %s: %s", plan.directory, reason)
        _clean(plan.directory)
        if tokenizer is None:
            tokenizer = _train(plan)
        return _write(plan, tokenizer, trained, workers, chunk_chars, started)


def _repair(
    plan: _Plan, verify: str, workers: int, chunk_chars: int, started: float
) -> tuple[Manifest | None, tokenizers.Tokenizer | None]:
    """`shards.verify_and_repair` of a folder whose manifest matches ``plan``: (the manifest,
    None), or (None, the intact tokenizer to redo everything with, never retrained)."""
    documents = functools.partial(_documents, plan, sentence_split=False)
    options = {"workers": workers, "chunk_chars": chunk_chars, "started": started}
    manifest = load_manifest(plan.directory)
    repaired = shards.verify_and_repair(manifest, verify, plan.tokenizer, documents, **options)
    if repaired is not None:
        return repaired, None
    return None, plan.tokenizer or tokenizers.load_tokenizer(manifest.tokenizer_path)


def _documents(plan: _Plan, stats: corpora.CorpusStats, sentence_split: bool) -> Iterator:
    config = plan.config
    return corpora.read_corpus(
        plan.files,
        config["format"],
        text_field=config["text_field"] or "text",
        errors=config["errors"],
        sentence_split=sentence_split,
        stats=stats,
    )


def _train(plan: _Plan) -> tokenizers.Tokenizer:
    """Trains SentencePiece on a seeded uniform sample (reservoir) of the input's sentences."""
    options = plan.config["tokenizer"]["train_sentencepiece"]
    sentences = itertools.chain.from_iterable(
        _documents(plan, corpora.CorpusStats(), plan.config["sentence_split"])
    )
    sample = sp_training.sample_sentences(sentences, options["sample_sentences"])
    if not sample:
        raise UserError(f"no text to train a SentencePiece model on in {len(plan.files)} files")
    vocab_size = options["vocab_size"]
    _LOG.info("training a %d-piece SentencePiece model on %d sentences", vocab_size, len(sample))
    return tokenizers.train_sentencepiece(
        plan.directory / SENTENCEPIECE_PREFIX,
        vocab_size,
        sentences=sample,
        model_type=options["model_type"],
        input_sentence_size=0,  # the sample is already drawn
        lowercase=options.get("lowercase", False),
    )


# ---------------------------------------------------------------------------------------------
# Writing


def _write(
    plan: _Plan,
    tokenizer: tokenizers.Tokenizer,
    trained: bool,
    workers: int,
    chunk_chars: int,
    started: float,
) -> Manifest:
    """Writes every shard under a temporary name, renames them, then writes the manifest."""
    num_shards = plan.config["num_shards"]
    names = [
        record_encoder.SHARD_PATTERN.format(index=i, count=num_shards) for i in range(num_shards)
    ]
    stats = corpora.CorpusStats()
    per_shard, crcs, counts = shards.write(
        plan.directory,
        names,
        _documents(plan, stats, sentence_split=False),  # the workers split
        tokenizer,
        workers=workers,
        chunk_chars=chunk_chars,
        sentence_split=plan.config["sentence_split"],
        segmenter=plan.config.get("word_segmenter", ""),
        progress=shards.Progress(plan.inputs, stats).update,
    )
    sync_directory(plan.directory)
    documents_written, sentences, tokens = (int(x) for x in per_shard.sum(axis=0))
    records = [
        {"name": name, "documents": int(d), "sentences": int(s), "tokens": int(t)}
        | {"bytes": paths.size(plan.directory / name), "crc32c": crc}
        for name, (d, s, t), crc in zip(names, per_shard, crcs, strict=True)
    ]
    all_counts = dataclasses.asdict(stats)  # documents read; sentences are paragraphs here
    all_counts |= {"documents": documents_written, "sentences": sentences, "tokens": tokens}
    all_counts |= counts
    path = paths.absolute(tokenizer.path)  # not resolve(): see _plan
    if trained:
        path = paths.resolve(tokenizer.path).relative_to(paths.resolve(plan.directory))
    manifest = Manifest(
        directory=plan.directory,
        config=plan.config,
        inputs=plan.inputs,
        tokenizer={
            "path": str(path),
            "fingerprint": tokenizer.fingerprint(),
            "kind": type(tokenizer).__name__,
            "vocab_size": tokenizer.vocab_size,
            "trained": trained,
        },
        counts=all_counts,
        shards=records,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(time.perf_counter() - started, 3),
        workers=workers,
        version=MANIFEST_VERSION,
    )
    write_manifest(manifest)
    _LOG.info("prepared %s in %.1f s", plan.directory, manifest.seconds)
    return manifest


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (2 on a user error, printed as one line)."""
    args = prepare_args.parser().parse_args(argv)
    paths.use_fsspec_backend()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if (args.tokenizer is None) == (args.train_sentencepiece_vocab_size is None):
        return console.report(
            UserError("give either --tokenizer or --train_sentencepiece_vocab_size")
        )
    try:
        manifest = prepare(
            args.input,
            args.output,
            args.format,
            args.tokenizer,
            lowercase=args.lowercase,
            train_sentencepiece_vocab_size=args.train_sentencepiece_vocab_size,
            sentencepiece_model_type=args.sentencepiece_model_type,
            sentencepiece_sample_sentences=args.sentencepiece_sample_sentences,
            sentencepiece_lowercase=args.sentencepiece_lowercase,
            num_shards=args.num_shards,
            text_field=args.text_field,
            errors=args.errors,
            sentence_split=args.sentence_split,
            word_segmenter=args.word_segmenter,
            workers=args.workers,
            chunk_chars=args.chunk_chars,
            verify=args.verify,
            force=args.force,
        )
    except (UserError, PermissionError) as e:  # PermissionError: an output folder not ours
        return console.report(e)
    counts = manifest.counts
    print(
        f"{args.output}: {counts['documents']:,} documents, {counts['tokens']:,} tokens in "
        f"{len(manifest.shards)} shards (manifest.json)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
