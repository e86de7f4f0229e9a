"""SST-2 fine-tuning from all-MiniLM-L6-v2: this project's GLUE job vs HF PyTorch, same settings.

Both fine-tune the same pretrained checkpoint on the first --train_examples rows of SST-2 train
(ours in length buckets of --pad_to_multiple_of with rows of similar lengths batched together;
HF padded to --max_seq_length, or with --hf_padding=longest each batch to its longest row by
DataCollatorWithPadding) for --steps AdamW steps (linear warm-up, linear decay to 0, no weight
decay on biases and LayerNorm weights, global-norm clipping, dropout 0.1), in float32 on CPU,
then score all 872 dev examples. Each (implementation, seed) runs in its own process. Measured:
dev accuracy, and the wall-clock of the whole job (load checkpoint, tokenize, train, evaluate;
imports excluded) and of the training loop alone (ours: from the job's logged step times,
compilation included). The machine is often shared, so each row also gives the cores the job
itself kept busy (CPU time / wall-clock) and those everything else on the machine did meanwhile
(from /proc/stat); a figure taken with other load running is not comparable.
Prints a table, the HF / ours time ratio, the accuracy difference in points, and the command.

  python bench/finetune_sst2.py --which=both --seeds=1
"""

import argparse
import csv
import os
import shutil
import sys
import tempfile

import finetune_compare as compare

DEFAULT_DATA = os.path.normpath(os.path.join(compare.ROOT, "..", "shared", "data", "glue", "SST-2"))


def read_tsv(path: str, limit: int = 0) -> tuple[list[str], list[int]]:
    """(sentences, labels) of an SST-2 file with header `sentence\\tlabel`; limit>0: first rows."""
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: not found (set --data_dir to the GLUE SST-2 folder)")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if rows[0] != ["sentence", "label"]:
        raise SystemExit(f"{path}: header {rows[0]} is not ['sentence', 'label']")
    rows = rows[1:][:limit] if limit else rows[1:]
    return [r[0] for r in rows], [int(r[1]) for r in rows]


def run_hf(args: argparse.Namespace, seed: int) -> dict:
    """Fine-tunes with transformers + torch; returns accuracy and times."""
    import torch
    import transformers

    path = compare.model_path()
    clock = compare.Clock()
    torch.manual_seed(seed)  # the classifier's initialisation, then dropout
    tokenizer = transformers.BertTokenizerFast.from_pretrained(path)
    model = transformers.BertForSequenceClassification.from_pretrained(path, num_labels=2)

    dynamic = args.hf_padding == "longest"  # DataCollatorWithPadding: each batch to its longest
    collator = transformers.DataCollatorWithPadding(tokenizer, return_tensors="pt")

    def encode(sentences: list[str]) -> dict:
        padding = False if dynamic else "max_length"
        return dict(tokenizer(sentences, padding=padding, truncation=True,
                              max_length=args.max_seq_length,
                              return_tensors=None if dynamic else "pt"))  # fmt: skip

    def take(features: dict, index) -> dict:
        if not dynamic:
            return {k: v[index] for k, v in features.items()}
        return collator([{k: v[int(i)] for k, v in features.items()} for i in index])

    train_x, train_y = read_tsv(os.path.join(args.data_dir, "train.tsv"), args.train_examples)
    dev_x, dev_y = read_tsv(os.path.join(args.data_dir, "dev.tsv"))
    train, dev = encode(train_x), encode(dev_x)
    train["labels"] = train_y if dynamic else torch.tensor(train_y, dtype=torch.long)
    train_s = compare.hf_train(model, args, len(train_y), seed, lambda i: take(train, i))

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(dev_y), 128):
            logits = model(**take(dev, range(i, min(i + 128, len(dev_y))))).logits
            correct += int((logits.argmax(-1) == torch.tensor(dev_y[i : i + 128])).sum())
    return {"accuracy": correct / len(dev_y), **clock.read(), "train_s": train_s}


def run_ours(args: argparse.Namespace, seed: int) -> dict:
    """Fine-tunes with this project's GLUE job; the time covers the whole glue_job.run call."""
    sys.path.insert(0, compare.ROOT)
    from bert.jobs import glue as glue_job
    from configs import glue as glue_config

    config = glue_config.get_config("task=sst2")
    compare.configure_ours(config, args, seed)
    config.data_dir = args.data_dir
    config.train_limit = args.train_examples
    config.predict_splits = ()
    workdir = tempfile.mkdtemp(prefix="finetune_sst2_")
    try:
        clock = compare.Clock()
        results = glue_job.run(config, workdir)
        times = clock.read()
        train_s = compare.logged_train_seconds(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"accuracy": float(results["dev"]["accuracy"]), **times, "train_s": train_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=DEFAULT_DATA, help="GLUE SST-2 folder")
    parser.add_argument("--train_examples", type=int, default=8000, help="first N train rows")
    compare.add_flags(parser, max_seq_length=64, learning_rate=5e-5, steps=250)
    parser.add_argument(
        "--hf_padding",
        choices=("max_length", "longest"),
        default="max_length",
        help="HF: every row to --max_seq_length, or DataCollatorWithPadding",
    )
    args = parser.parse_args()
    if not args.worker and not os.path.isdir(args.data_dir):
        raise SystemExit(f"--data_dir={args.data_dir}: no such folder (the GLUE SST-2 folder)")
    workers = {"ours": run_ours, "hf": run_hf}
    setting = f"{args.train_examples} SST-2 train examples, HF padding {args.hf_padding}"
    compare.drive(args, os.path.abspath(__file__), workers, "accuracy", setting)


if __name__ == "__main__":
    main()
