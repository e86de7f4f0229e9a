"""Checkpoint conversion between our parameters, Hugging Face directories and Google TF
checkpoints. It imports nothing above it: the loader (bert/pretrained.py) sits on it, and the
exports of training workdirs and the command line sit on the loader (bert/export/).

  name_table.py   the one table: each parameter of ours, its HF name and its Google TF name
  formats.py      tensor file readers (safetensors, .bin, Flax msgpack, TF) and atomic folders
  params.py       name mapping with shape checks: ours <-> HF state dicts and TF variables
  directories.py  detect a directory's format, import it, export HF or our Orbax format
  hf_tokenizer.py our tokenizers as HF tokenizer files (SentencePiece as a tokenizer.json)
  st_modules.py   sentence-transformers module files (modules.json, Pooling, Normalize)
  __main__.py     python -m bert.convert: runs bert/export/cli.py
"""

from bert.convert.directories import (
    Imported,
    detect_format,
    export_hf,
    import_model,
    load_orbax,
    save_orbax,
)
from bert.convert.formats import CheckpointError

__all__ = [
    "CheckpointError",
    "Imported",
    "detect_format",
    "export_hf",
    "import_model",
    "load_orbax",
    "save_orbax",
]
