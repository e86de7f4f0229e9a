"""Exports above the loader (bert/pretrained.py): a training workdir to the matching Hugging Face
class (workdirs.py), any loadable checkpoint to a sentence-transformers directory (st_export.py),
and the conversion command `python -m bert.convert` (cli.py)."""
