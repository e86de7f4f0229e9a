"""Turns the `config.data` section into prepared records: raw text (local files, `hf://` Hub
files, or a TFDS data set) -> tokenizer (given as a file, folder or Hub model id, or SentencePiece
trained on the corpus) -> shards in `workdir/data`, split into training and held-out evaluation
shards. Hub inputs that cannot be reached fail first, before any work, saying what to pass."""

import dataclasses
import fnmatch
import logging
import pathlib
import re

from input_pipeline import prepare, shards, tfds_corpus, tokenizers
from input_pipeline.manifest import Manifest, load_manifest
from util import atomic, hub
from util.errors import UserError

_LOG = logging.getLogger(__name__)

# What an offline user can pass instead of Hub inputs, each format with what it reads (a file
# read in the wrong format is caught by `corpora`, which names the right one).
LOCAL_INSTEAD = (
    "To train on local files instead, pass --config.data.input='corpus/*' and their format: "
    "--config.data.format=text (a sentence per line, blank lines between documents), "
    "paragraphs (a paragraph per line), wikiextractor (WikiExtractor's <doc> output), "
    "jsonl (a document per line), parquet or csv (a document per row), the text in "
    "--config.data.text_field"
)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The text to prepare and how (`config.data`'s fields of the same names; configs/bert_base.py
    documents each).

    Attributes:
      input: comma-separated globs of raw text (local, gs://, hf://); empty: the TFDS set.
      format: text, paragraphs, jsonl, wikiextractor, parquet or csv.
      text_field: the jsonl field or parquet column holding the text.
      tfds_name, tfds_split, tfds_field: the TFDS text set used when `input` is empty.
      tokenizer: a tokenizer file or folder, or a Hub model id; empty: SentencePiece trained on
        the corpus.
      sentencepiece_vocab_size, sentencepiece_model_type: the trained SentencePiece model.
      sentencepiece_lowercase: train it uncased (case folded in its normalisation).
      num_shards: record shards written.
      word_segmenter: "jieba" (Chinese words as the word starts) or "" (`word_segmenter`).
      verify: the start check of prepared shards, checksum or size.
      eval_shards: the last shards held out for evaluation (or eval_input's shards).
      eval_input: globs of a separate held-out corpus; empty: eval_shards of the corpus.
    """

    input: str
    format: str
    text_field: str
    tfds_name: str
    tfds_split: str
    tfds_field: str
    tokenizer: str
    sentencepiece_vocab_size: int
    sentencepiece_model_type: str
    sentencepiece_lowercase: bool
    num_shards: int
    word_segmenter: str
    verify: str
    eval_shards: int
    eval_input: str


@dataclasses.dataclass(frozen=True)
class PretrainingData:
    tokenizer: tokenizers.Tokenizer
    train_files: list[str]
    eval_files: list[str]
    manifest: Manifest


def export_tfds(name: str, split: str, field: str, directory: pathlib.Path) -> pathlib.Path:
    """Writes a TFDS text data set once as plain text (a sentence per line, a blank line between
    documents); reused on later runs. The file appears only when complete."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-{split}")
    path = directory / f"{safe}.txt"
    if path.is_file():
        return path
    with atomic.open_atomically(path) as out:
        for document in tfds_corpus.read_tfds(name, split, field, download=True):
            out.write(("\n".join(s.replace("\n", " ") for s in document) + "\n\n").encode())
    return path


def _patterns(data: Corpus, workdir: pathlib.Path) -> tuple[list[str], str]:
    """The input globs and their format: `data.input`, or the TFDS set exported as text."""
    if data.input:
        return [p.strip() for p in data.input.split(",") if p.strip()], data.format
    try:
        path = export_tfds(data.tfds_name, data.tfds_split, data.tfds_field, workdir / "raw")
    except UserError:
        raise  # says plainly what to pass instead (e.g. a Beam data set)
    except Exception as e:
        raise UserError(
            f"cannot read the TFDS data set {data.tfds_name!r} ({e}). To train on local "
            "text instead, set --config.data.input='/path/to/*.txt' and "
            "--config.data.format=text|paragraphs|jsonl|wikiextractor|parquet|csv"
        ) from e
    return [str(path)], "text"


def prepare_pretraining_data(
    data: Corpus, workdir: pathlib.Path, tokenizer: str = "", evaluate_only: bool = False
) -> PretrainingData:
    """Prepares (or finds prepared) records of `data` under `workdir/data`, and of
    `data.eval_input` (if given) under `workdir/eval_data`.

    Args:
      tokenizer: the tokenizer to use when `data.tokenizer` is empty (e.g. the checkpoint's,
        when evaluating one); with both empty, SentencePiece is trained on the corpus.
      evaluate_only: every shard is for evaluation (no training files).

    Held-out data: the `data.eval_input` corpus, prepared with the same tokenizer into
    `data.eval_shards` shards, or else the last `data.eval_shards` shards of the corpus.
    """
    prepared = {}  # field -> the manifest prepared before, where the Hub cannot be reached
    for field, folder in (("input", "data"), ("eval_input", "eval_data")):
        globs = [p.strip() for p in getattr(data, field).split(",") if p.strip()]
        try:
            hub.check_hub_inputs(globs, f"config.data.{field}", LOCAL_INSTEAD)
        except UserError:
            prepared[field] = _prepared_before(globs, workdir / folder, data.verify)
            if prepared[field] is None:
                raise
    if data.sentencepiece_lowercase and data.tokenizer:
        raise UserError(
            "config.data.sentencepiece_lowercase is for the SentencePiece model trained on the "
            f"corpus; config.data.tokenizer={data.tokenizer!r} keeps its own casing"
        )
    tokenizer = hub.local_path(data.tokenizer, "config.data.tokenizer", tokenizer_only=True) or (
        tokenizer
    )
    patterns, text_format = _patterns(data, workdir)
    manifest = prepared.get("input") or prepare.prepare(
        patterns,
        workdir / "data",
        text_format,
        tokenizer or None,
        train_sentencepiece_vocab_size=None if tokenizer else data.sentencepiece_vocab_size,
        sentencepiece_model_type=data.sentencepiece_model_type,
        sentencepiece_lowercase=bool(data.sentencepiece_lowercase and not tokenizer),
        num_shards=data.num_shards,
        text_field=data.text_field,
        word_segmenter=data.word_segmenter,
        verify=data.verify,
    )
    _check_every_shard_has_documents(manifest, "config.data.num_shards")
    shards = [str(p) for p in manifest.shard_paths]
    loaded = tokenizers.load_tokenizer(manifest.tokenizer_path)
    if evaluate_only:
        return PretrainingData(loaded, [], shards, manifest)
    if data.eval_input:
        held_out = prepared.get("eval_input") or prepare.prepare(
            [p.strip() for p in data.eval_input.split(",") if p.strip()],
            workdir / "eval_data",
            data.format,
            manifest.tokenizer_path,
            num_shards=data.eval_shards,
            text_field=data.text_field,
            word_segmenter=data.word_segmenter,
            verify=data.verify,
        )
        _check_every_shard_has_documents(held_out, "config.data.eval_shards")
        return PretrainingData(loaded, shards, [str(p) for p in held_out.shard_paths], manifest)
    if not 0 < data.eval_shards < len(shards):
        raise UserError(
            f"config.data.eval_shards={data.eval_shards} must be at least 1 and leave training "
            f"shards: {manifest.directory} has {len(shards)} (config.data.num_shards)"
        )
    split = len(shards) - data.eval_shards
    return PretrainingData(loaded, shards[:split], shards[split:], manifest)


def _check_every_shard_has_documents(manifest: Manifest, field: str) -> None:
    """Every shard is read by one input stream, which needs documents: a corpus cut into more
    shards than it has documents is an error naming the field that sets the shards."""
    documents = sum(shard["documents"] for shard in manifest.shards)
    if any(not shard["documents"] for shard in manifest.shards):
        raise UserError(
            f"{field}={len(manifest.shards)}: the corpus in {manifest.directory} holds "
            f"{documents} documents, too few for its shards; set {field} to at most {documents}"
        )


def _prepared_before(globs: list[str], directory: pathlib.Path, verify: str) -> Manifest | None:
    """Where the Hub cannot be reached: the corpus prepared before in `directory` from exactly
    the files `globs` name (a run resumed offline), its shards checked as `verify` says; None
    where there is none."""
    try:
        manifest = load_manifest(directory)
    except (FileNotFoundError, UserError):
        return None
    recorded = [entry["path"] for entry in manifest.inputs]
    named = [any(fnmatch.fnmatchcase(path, glob) for glob in globs) for path in recorded]
    found = [any(fnmatch.fnmatchcase(path, glob) for path in recorded) for glob in globs]
    if not recorded or not all(named) or not all(found):
        return None
    broken = shards.damaged(manifest, verify)
    if broken:
        found = ", ".join(f"{manifest.shards[i]['name']} ({why})" for i, why in broken)
        raise UserError(
            f"{directory}: {len(broken)} of {len(manifest.shards)} shards damaged ({found}), "
            "and the Hub cannot be reached to prepare them again"
        )
    _LOG.warning("the Hub cannot be reached: %s is used as it was prepared from %d files (not "
                 "compared with the Hub's files now)", directory, len(recorded))  # fmt: skip
    return manifest
