"""Checkpoint conversion between our parameters, Hugging Face directories and Google TF
checkpoints.

  name_table.py   the one table: each parameter of ours, its HF name and its Google TF name
  formats.py      tensor file readers (safetensors, .bin, Flax msgpack, TF) and atomic folders
  params.py       name mapping with shape checks: ours <-> HF state dicts and TF variables
  directories.py  detect a directory's format, import it, export HF or our Orbax format
  workdirs.py     a training workdir (pre-trained or fine-tuned) -> the matching HF class
  hf_tokenizer.py our tokenizers as HF tokenizer files (SentencePiece as a tokenizer.json)
  hub.py          upload an HF directory to the Hub (huggingface_hub)
  st_modules.py   sentence-transformers module files (modules.json, Pooling, Normalize)
  st_export.py    any loadable checkpoint -> a sentence-transformers directory
  cli.py          the CLI: python -m bert.convert SRC DST --to=hf|orbax|sentence-transformers
                  (__main__.py runs it)
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
