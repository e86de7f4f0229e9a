"""The conversion CLI, run as

  python -m bert.convert SRC DST --to=hf|orbax [--overwrite] [--ignore_unknown]
  python -m bert.convert WORKDIR DST --to=hf [--step=N] [--push_to_hub=org/name]
  python -m bert.convert SRC DST --to=sentence-transformers [--pooling=mean|cls|max]
      [--normalize|--no-normalize] [--max_seq_length=N] [--step=N] [--push_to_hub=org/name]

Converts a checkpoint directory (HF, Google TF or ours; the format is detected) to an HF
directory or to our own format; or a training workdir of ours (pre-trained or fine-tuned) to an
HF directory of the matching class with its tokenizer, optionally uploaded to the Hub; or either
(or a Hub model id) to a sentence-transformers directory (bert/export/st_export.py).
"""

import argparse

from bert.convert import modernbert_table
from bert.convert.directories import export_hf, import_model, save_orbax
from bert.convert.name_table import CLASSIFIER, QA_OUTPUTS
from bert.export.st_export import export_sentence_transformers
from bert.export.workdirs import export_workdir
from bert.heads import POOLINGS
from bert.training import checkpoints
from util import console, errors, hub, paths
from util.hub import check_repo_id, push_to_hub

# read by the loader; not written by a conversion, but for a ModernBERT task class's --to=hf
FINE_TUNED_HEADS = (CLASSIFIER, QA_OUTPUTS, modernbert_table.PREDICTION_HEAD)

ST = "sentence-transformers"  # the --to value


def _parser() -> argparse.ArgumentParser:
    parser = console.ArgumentParser(
        prog="python -m bert.convert",
        description="Convert BERT checkpoints: HF directory, Google TF checkpoint, ours, or a "
        "training workdir of ours.",
    )
    parser.add_argument(
        "source", help="checkpoint directory, training workdir (detected) or Hub model id"
    )
    parser.add_argument("destination", help="output directory (must not exist or be empty)")
    parser.add_argument("--to", choices=("hf", "orbax", ST), required=True, help="output format")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output")
    parser.add_argument(
        "--ignore_unknown", action="store_true", help="skip source tensors the table does not know"
    )
    parser.add_argument(
        "--step", type=int, default=None, help="a workdir's checkpoint step (default: newest)"
    )
    parser.add_argument(
        "--push_to_hub", default="", metavar="ORG/NAME", help="then upload DST to this Hub repo"
    )
    group = parser.add_argument_group(f"--to={ST} (default: what the source records, else these)")
    group.add_argument("--pooling", choices=POOLINGS, default="", help="default mean")
    group.add_argument(
        "--normalize", action=argparse.BooleanOptionalAction, help="L2-normalise (default no)"
    )
    group.add_argument(
        "--max_seq_length", type=int, default=0, help="default the model's position count"
    )
    return parser


def _export_sentence_transformers(args) -> None:
    if args.ignore_unknown:
        raise errors.UserError(f"--ignore_unknown does not apply to --to={ST}")
    done = export_sentence_transformers(
        args.source, args.destination, pooling=args.pooling, normalize=args.normalize,
        max_seq_length=args.max_seq_length, step=args.step, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"wrote {ST} directory {args.destination}")
    print(f"  pooling {done.pooling}, normalize {done.normalize}, "
          f"max_seq_length {done.max_seq_length} ({done.origin})")  # fmt: skip
    print(f"  files: {', '.join(done.files)}")


def _convert_checkpoint(args) -> None:
    if args.step is not None:
        raise errors.UserError(f"{args.source}: --step applies only to a training workdir")
    model = import_model(args.source, ignore_unknown=args.ignore_unknown)
    whole = args.to == "hf" and model.architecture in modernbert_table.TASK_CLASSES
    params = {k: v for k, v in model.params.items() if whole or k not in FINE_TUNED_HEADS}
    if whole:  # written as the same task class, head and labels included
        copied = export_hf(params, model.config, args.destination, model.source, args.overwrite,
                           model.architecture)  # fmt: skip
    else:
        writer = export_hf if args.to == "hf" else save_orbax
        copied = writer(params, model.config, args.destination, model.source, args.overwrite)
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
    if whole:
        print(f"  task head written as {model.architecture}")
    if len(params) < len(model.params):
        heads = ", ".join(sorted(set(model.params) - set(params)))
        print(f"  fine-tuned head not written: {heads} (pretrained.load reads it from SRC)")
    print(f"wrote {args.to} directory {args.destination}")
    print(f"  tokenizer files: {', '.join(copied) if copied else 'none in the source'}")


def _convert_workdir(args) -> None:
    if args.to != "hf":
        raise errors.UserError(
            f"{args.source}: a training workdir converts --to=hf only (to start a run from it, "
            "give the workdir itself as init_from)"
        )
    if args.ignore_unknown:
        raise errors.UserError(f"{args.source}: --ignore_unknown does not apply to a workdir")
    done = export_workdir(args.source, args.destination, args.step, args.overwrite)
    print(f"read workdir {args.source}: task {done.task}, step {done.step}")
    print(f"wrote hf directory {args.destination} ({done.architecture})")
    if done.labels:
        print(f"  labels: {', '.join(done.labels)}")
    print(f"  files: {', '.join(done.files)}")
    for note in done.notes:
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    paths.use_fsspec_backend()  # gs:// and hf:// through fsspec, also inside Orbax
    try:
        args.source = hub.local_path(args.source, "source")  # a Hub model id: its cached files
        if args.push_to_hub:
            check_repo_id(args.push_to_hub)  # before the conversion, not after
            if args.to == "orbax":
                raise errors.UserError(f"--push_to_hub needs --to=hf or --to={ST}")
        if args.to != ST and (args.pooling or args.normalize is not None or args.max_seq_length):
            raise errors.UserError(
                f"--pooling, --normalize and --max_seq_length apply only to --to={ST}"
            )
        if args.to == ST:
            _export_sentence_transformers(args)
        elif checkpoints.is_training_workdir(args.source):
            _convert_workdir(args)
        else:
            _convert_checkpoint(args)
        if args.push_to_hub:
            url = push_to_hub(args.destination, args.push_to_hub)
            print(f"uploaded {args.destination} to {args.push_to_hub}: {url}")
    except errors.UserError as e:
        return console.report(e)
    return 0
