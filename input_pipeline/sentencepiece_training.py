"""Training a SentencePiece model whose first pieces are given special tokens.

:func:`train_model` runs the SentencePiece trainer on sentences or text files and writes
``{prefix}.model`` and ``{prefix}.vocab`` without ever leaving a partial file;
:func:`sample_sentences` draws the seeded, uniform sample `prepare` trains on.
`tokenizers.train_sentencepiece` calls :func:`train_model` with BERT's five special tokens and
loads the result. This module imports nothing of `tokenizers`, so that one can import it.
"""

import io
import os
import pathlib
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sentencepiece as spm

from util import atomic, paths
from util.errors import UserError

MODEL_TYPES = ("unigram", "bpe")
# An uncased model's normalisation: SentencePiece's default NFKC rule with Unicode case folding,
# compiled into the .model's character map, so every encoder of the model (ours, sentencepiece,
# the tokenizer.json an export converts it to) lower-cases as in training.
LOWERCASE_RULE = "nmt_nfkc_cf"

PathLike = str | os.PathLike


def _trainer_options(
    special_tokens: Sequence[str],
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    byte_fallback: bool,
    input_sentence_size: int,
    num_threads: int | None,
    verbose: bool,
) -> dict[str, Any]:
    """`SentencePieceTrainer.train` options putting ``special_tokens`` at ids 0, 1, 2, ...."""
    pad, unk, cls, sep, *controls = special_tokens
    options: dict[str, Any] = {"pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3}
    options |= {"pad_piece": pad, "unk_piece": unk, "bos_piece": cls, "eos_piece": sep}
    options |= {"control_symbols": controls, "minloglevel": 0 if verbose else 2}
    options |= {"vocab_size": vocab_size, "model_type": model_type, "byte_fallback": byte_fallback}
    options |= {"character_coverage": character_coverage, "shuffle_input_sentence": True}
    options |= {"input_sentence_size": input_sentence_size}
    options["num_threads"] = num_threads or os.cpu_count() or 1
    return options


def _input_options(
    sentences: Iterable[str] | None, files: Sequence[PathLike] | None
) -> dict[str, Any]:
    """The trainer's ``input`` (files, each checked to exist) or ``sentence_iterator``."""
    if files is not None:
        for f in files or [""]:
            if not pathlib.Path(f).is_file():
                raise UserError(f"SentencePiece training file {f!r} does not exist")
        return {"input": [os.fspath(f) for f in files]}
    return {"sentence_iterator": iter(sentences)}


def _write_model(prefix: pathlib.Path, proto: bytes) -> pathlib.Path:
    """Writes ``{prefix}.vocab`` (piece, tab, score), then ``{prefix}.model``; returns its path."""
    processor = spm.SentencePieceProcessor(model_proto=proto)
    vocab_lines = "".join(
        f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n"
        for i in range(processor.get_piece_size())
    )
    prefix.parent.mkdir(parents=True, exist_ok=True)
    model_path = prefix.with_name(prefix.name + ".model")
    atomic.write_atomically(prefix.with_name(prefix.name + ".vocab"), vocab_lines.encode("utf-8"))
    atomic.write_atomically(model_path, proto)
    return model_path


def train_model(
    output_prefix: PathLike,
    vocab_size: int,
    special_tokens: Sequence[str],
    *,
    sentences: Iterable[str] | None = None,
    files: Sequence[PathLike] | None = None,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    byte_fallback: bool = False,
    input_sentence_size: int = 2_000_000,
    num_threads: int | None = None,
    verbose: bool = False,
    lowercase: bool = False,
    extra_options: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Trains a SentencePiece model with ``special_tokens`` at ids 0, 1, 2, ...

    Writes ``{output_prefix}.model`` and ``{output_prefix}.vocab`` (piece, tab, score), each
    under a temporary name renamed at the end, so a failure leaves no partial file.

    Args:
      output_prefix: path prefix of the outputs; missing parent folders are created.
      vocab_size: number of pieces, special tokens included.
      special_tokens: the padding, unknown, [CLS] and [SEP] pieces, then control symbols (such
        as [MASK]); text never produces them, except the unknown piece.
      sentences: the training text, one sentence per item (e.g. from ``corpora``).
      files: instead of ``sentences``, plain-text files with one sentence per line.
      model_type: "unigram" or "bpe".
      character_coverage: share of characters the vocabulary covers; the rest are unknown
        (or bytes, with ``byte_fallback``).
      byte_fallback: spell characters outside the vocabulary as UTF-8 byte pieces instead of
        the unknown piece (takes 256 ids).
      input_sentence_size: train on a uniform sample of at most this many sentences, which
        bounds the trainer's memory; 0 takes every sentence.
      num_threads: trainer threads; None uses every CPU.
      verbose: let the trainer log its progress to stderr.
      lowercase: an uncased model (`LOWERCASE_RULE`): text is case folded in training and in
        every encoding with the model.
      extra_options: further ``SentencePieceTrainer`` options (e.g. ``split_digits=True``).

    Returns:
      The path of the written ``.model`` file.
    """
    if (sentences is None) == (files is None):
        raise ValueError("train_sentencepiece takes exactly one of sentences= or files=")
    if model_type not in MODEL_TYPES:
        raise UserError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    if vocab_size <= len(special_tokens):
        raise UserError(f"vocab_size must exceed {len(special_tokens)}, got {vocab_size}")
    prefix = paths.path(output_prefix)
    options = _trainer_options(
        special_tokens,
        vocab_size,
        model_type,
        character_coverage,
        byte_fallback,
        input_sentence_size,
        num_threads,
        verbose,
    )
    if lowercase:
        options["normalization_rule_name"] = LOWERCASE_RULE
    options.update(extra_options or {})
    options |= _input_options(sentences, files)
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(model_writer=writer, **options)
    except RuntimeError as e:  # the trainer's complaints are about its input or options
        raise UserError(f"training the SentencePiece model {prefix}.model: {e}") from e
    return _write_model(prefix, writer.getvalue())


def sample_sentences(sentences: Iterable[str], size: int, seed: int = 0) -> list[str]:
    """A uniform sample of at most ``size`` sentences (reservoir sampling), seeded.

    One pass, with memory bounded by the sample; the same sentences and seed give the same
    sample, in the same order.
    """
    rng = random.Random(seed)
    sample: list[str] = []
    for seen, sentence in enumerate(sentences):
        if seen < size:
            sample.append(sentence)
        elif (slot := rng.randrange(seen + 1)) < size:
            sample[slot] = sentence
    return sample
