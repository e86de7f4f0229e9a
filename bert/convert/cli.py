"""The conversion CLI, run as

  python -m bert.convert SRC DST --to=hf|orbax [--overwrite] [--ignore_unknown]

Converts a checkpoint directory (HF, Google TF or ours; the format is detected) to an HF
directory or to our own format.
"""

import argparse
import sys

from bert.convert.directories import export_hf, import_model, save_orbax
from bert.convert.formats import CheckpointError
from input_pipeline import paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bert.convert",
        description="Convert BERT checkpoints: HF directory, Google TF checkpoint, or ours.",
    )
    parser.add_argument("source", help="checkpoint directory (format detected)")
    parser.add_argument("destination", help="output directory (must not exist or be empty)")
    parser.add_argument("--to", choices=("hf", "orbax"), required=True, help="output format")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output")
    parser.add_argument(
        "--ignore_unknown", action="store_true", help="skip source tensors the table does not know"
    )
    args = parser.parse_args(argv)
    paths.use_fsspec_backend()  # gs:// and hf:// through fsspec, also inside Orbax
    try:
        model = import_model(args.source, ignore_unknown=args.ignore_unknown)
        writer = export_hf if args.to == "hf" else save_orbax
        copied = writer(model.params, model.config, args.destination, model.source, args.overwrite)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = model.config
    print(f"read {model.source_format} checkpoint {model.source}")
    print(
        f"  {c.num_layers} layers, width {c.hidden_size}, {c.num_heads} heads, "
        f"vocabulary {c.vocab_size}; groups: {', '.join(model.groups)}"
    )
    if model.missing_heads:
        print(f"  absent from the source, not written: {', '.join(model.missing_heads)}")
    if model.ignored:
        print(f"  skipped {len(model.ignored)} non-parameter tensors")
    print(f"wrote {args.to} directory {args.destination}")
    print(f"  tokenizer files: {', '.join(copied) if copied else 'none in the source'}")
    return 0
