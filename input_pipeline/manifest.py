"""The `manifest.json` of a prepared corpus: what was read, how, with which tokenizer, and where.

`prepare` writes it last, under a temporary name renamed into place, so a folder holding a
manifest holds finished shards; a folder without one is unfinished. Readers (the tf.data
pipeline, `main.py`) take the shard list and the tokenizer fingerprint from here.

Layout (JSON object):
  version      MANIFEST_VERSION
  config       what decides the output besides the inputs: format, text_field, errors,
               sentence_split, num_shards, and the tokenizer request (a path, or SentencePiece
               training options)
  inputs       [{path, bytes, mtime_ns}] of every input file, in reading order
  tokenizer    {path, fingerprint, kind, vocab_size, trained}; path is relative to the folder
               for a tokenizer trained into it, else absolute
  counts       files, skipped_files, documents, skipped_documents, documents_without_tokens,
               sentences, empty_sentences, tokens, skipped_lines, replaced_lines
  shards       [{name, documents, sentences, tokens, bytes, crc32c}]; crc32c is the shard's
               CRC-32C as 8 hex digits (GCS's object checksum), computed while writing. Shard
               s of n holds documents s, s + n, ... of the inputs in reading order, so inputs,
               config and tokenizer decide each shard alone (see `input_pipeline/shards.py`).
               Manifests written before checksums existed have no crc32c: their shards are
               checked once against their records' own TFRecord CRCs, then it is added.
  created, seconds, workers   informative only (not compared)
"""

import dataclasses
import json
import os
import pathlib
from typing import Any

from util import atomic, paths
from util.errors import UserError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A loaded `manifest.json` (see the module doc for the fields).

    Attributes:
      directory: the folder holding it (not stored in the file).
    """

    directory: pathlib.Path
    config: dict[str, Any]
    inputs: list[dict[str, Any]]
    tokenizer: dict[str, Any]
    counts: dict[str, int]
    shards: list[dict[str, Any]]
    created: str = ""
    seconds: float = 0.0
    workers: int = 0
    version: int = MANIFEST_VERSION

    @property
    def shard_paths(self) -> list[pathlib.Path]:
        """Absolute paths of the shards, in order."""
        return [self.directory / shard["name"] for shard in self.shards]

    @property
    def tokenizer_path(self) -> pathlib.Path:
        """The tokenizer file the records were made with (a trained one lies in ``directory``)."""
        recorded = self.tokenizer["path"]
        if paths.is_remote(recorded) or os.path.isabs(recorded):
            return paths.path(recorded)
        return self.directory / recorded

    @property
    def fingerprint(self) -> str:
        """The tokenizer fingerprint (``Tokenizer.fingerprint()``) the records were made with."""
        return self.tokenizer["fingerprint"]

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        del fields["directory"]
        return json.dumps(fields, indent=1, sort_keys=True) + "\n"


def manifest_path(directory: PathLike) -> pathlib.Path:
    return paths.path(directory) / MANIFEST_NAME


def load_manifest(directory: PathLike) -> Manifest:
    """Reads ``directory/manifest.json``.

    Raises:
      FileNotFoundError: no manifest (the folder was never prepared, or not to the end).
      ValueError: the file is not a manifest of this version.
    """
    path = manifest_path(directory)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {directory} is not a finished prepared corpus "
            "(run python -m input_pipeline.prepare)"
        )
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(fields, dict) or fields.get("version") != MANIFEST_VERSION:
        found = fields.get("version") if isinstance(fields, dict) else type(fields).__name__
        raise UserError(f"{path}: manifest version {found!r}, expected {MANIFEST_VERSION}")
    names = {f.name for f in dataclasses.fields(Manifest)} - {"directory"}
    if set(fields) != names:
        raise UserError(f"{path}: fields {sorted(fields)}, expected {sorted(names)}")
    return Manifest(directory=paths.path(directory), **fields)


def write_manifest(manifest: Manifest) -> pathlib.Path:
    """Writes the manifest under a temporary name, syncs it, and renames it into place (on an
    object store: uploads it in one piece, after everything it lists)."""
    path = manifest_path(manifest.directory)
    # mkstemp would make it private; the manifest is as readable as the shards.
    atomic.write_atomically(path, manifest.to_json().encode("utf-8"))
    sync_directory(path.parent)
    return path


def sync_directory(directory: pathlib.Path) -> None:
    """Makes renames inside ``directory`` durable (a no-op where folders cannot be opened,
    and on object stores, which have no renames)."""
    if paths.is_remote(directory):
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
