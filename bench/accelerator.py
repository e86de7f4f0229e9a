"""One prepared accelerator benchmark: pre-training, HF PyTorch, fine-tuning and encoding.

A single call measures, on synthetic batches:
  - our BERT pre-training step (LAMB, MLM on the masked positions + NSP) at sequence 128 and
    512, with XLA attention and cuDNN attention (GPU only): sequences/s and MFU (bert/flops.py);
  - our ModernBERT-base-shaped MLM step (30% masked) at sequence 512;
  - HF PyTorch BertForPreTraining at the same shapes (bf16 autocast, SDPA attention,
    torch.compile on GPU, AdamW), in its own process so that JAX's memory is not shared;
  - SST-2-shaped fine-tuning (batch 32, max_seq_length 128, sentence lengths like SST-2's):
    steps/s padded to 128 and with length buckets of 32;
  - sentence encoding (mean pooling, sorted by length, buckets of 16): sentences/s.
It prints one table and writes it as JSON. On a GPU/TPU the model is BERT-base in bfloat16;
on CPU a tiny model in float32 (seconds). A part that fails is a row with its error, so one
call always gives the whole table.

It imports only the model library, the optimizer, the step and the FLOP count (no TensorFlow or
ml_collections), so that it runs on a machine with jax, flax, optax, torch and
transformers alone:

  python bench/accelerator.py                         # size from the backend
  python bench/accelerator.py --size=tiny --json=/tmp/accelerator.json
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (layers, hidden width), as configs/common.py SIZES (not imported: it needs ml_collections)
SIZES = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "base": (12, 768)}
VOCAB = 30522
PREDICTIONS = {128: 20, 512: 80}  # BERT's max_predictions_per_seq for each sequence length
# SST-2 training sentences average about 13 WordPiece tokens: 3 + a geometric tail, mean 13.
SST2_EXTRA_MEAN = 10


def model_fields(size: str, dtype: str, attention: str, attention_dropout: float) -> dict:
    layers, width = SIZES[size]
    return dict(vocab_size=VOCAB, hidden_size=width, num_layers=layers, num_heads=width // 64,
                intermediate_size=4 * width, dtype=dtype, attention_impl=attention,
                attention_dropout=attention_dropout)  # fmt: skip


def modernbert_fields(size: str, dtype: str) -> dict:
    """ModernBERT-base's architecture (answerdotai/ModernBERT-base config.json: 22 layers,
    GeGLU 1152, a 128-token local window, global every third layer); smaller widths off base."""
    layers, width = (22, 768) if size == "base" else SIZES[size]
    return dict(vocab_size=50368, hidden_size=width, num_layers=layers, num_heads=width // 64,
                intermediate_size=width * 3 // 2, max_position_embeddings=8192,
                type_vocab_size=0, hidden_dropout=0.0, attention_dropout=0.0,
                layer_norm_eps=1e-5, dtype=dtype, position_embedding="rope",
                rope_theta=160000.0, pre_norm=True, norm_bias=False, gated_mlp=True,
                attention_bias=False, mlp_bias=False, head_bias=False, local_window=128,
                global_every=3)  # fmt: skip


def pretraining_batch(
    batch: int, seq: int, seed: int = 0, predictions: int = 0
) -> dict[str, np.ndarray]:
    """Random ids, full rows (pre-training packs its sequences), masked positions, NSP labels;
    `predictions` masked positions a row (0: BERT's count for `seq`)."""
    rng = np.random.default_rng(seed)
    predictions = predictions or PREDICTIONS.get(seq, max(1, round(0.15 * seq)))
    ids = rng.integers(5, VOCAB, size=(batch, seq)).astype(np.int32)
    positions = np.sort(
        rng.permuted(np.tile(np.arange(1, seq), (batch, 1)), axis=1)[:, :predictions]
    )
    return {
        "input_ids": ids,
        "segment_ids": (np.arange(seq)[None] >= seq // 2).repeat(batch, 0).astype(np.int32),
        "input_mask": np.ones((batch, seq), np.int32),
        "masked_lm_positions": positions.astype(np.int32),
        "masked_lm_ids": np.take_along_axis(ids, positions, 1),
        "masked_lm_weights": np.ones((batch, predictions), np.float32),
        "next_sentence_labels": rng.integers(0, 2, size=batch).astype(np.int32),
    }


def sentence_lengths(count: int, max_length: int, seed: int) -> np.ndarray:
    """Token counts ([CLS] and [SEP] included) shaped like SST-2's sentences."""
    rng = np.random.default_rng(seed)
    return np.minimum(3 + rng.geometric(1 / SST2_EXTRA_MEAN, size=count), max_length)


def padded_rows(lengths: np.ndarray, width: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)  # [rows, width]
    ids = rng.integers(5, VOCAB, size=mask.shape).astype(np.int32) * mask
    return {"input_ids": ids, "segment_ids": np.zeros_like(ids), "input_mask": mask}


def bucket(longest: int, multiple: int, max_length: int) -> int:
    return max_length if multiple <= 0 else min(-(-longest // multiple) * multiple, max_length)


def timed(run, batches: list, warmup: list) -> float:
    """Seconds for run(b) over `batches` after run(w) over `warmup` (compiles every shape)."""
    import jax

    for b in warmup:
        jax.block_until_ready(run(b))
    start = time.perf_counter()
    out = None
    for b in batches:
        out = run(b)
    jax.block_until_ready(out)
    return time.perf_counter() - start


def train_runner(model, objective, mesh, seq: int):
    """(step function over a host batch, its metrics) for a fresh state of `model`."""
    from bert.training import optim, sharding
    from bert.training import step as train_step

    schedule = optim.learning_rate_schedule(1e-4, 10, 10_000)
    tx = optim.make_optimizer("lamb", schedule, 0.01, clip_norm=1.0)
    holder = {"state": train_step.create_train_state(model, tx, mesh, 0, seq)}
    _, shardings = train_step.state_shardings(model, tx, mesh, seq)
    step = train_step.compile_train_step(objective, tx, schedule, mesh, shardings)

    def run(batch):
        holder["state"], metrics = step(holder["state"], sharding.global_batch(batch, mesh))
        return metrics["loss"]

    return run


def bench_pretraining(args, seq: int, attention: str) -> dict:
    import jax

    from bert import flops
    from bert.model import BertConfig
    from bert.objectives import MlmNsp
    from bert.training import sharding

    dropout = 0.0 if attention == "cudnn" else 0.1  # cuDNN attention trains without it
    config = BertConfig(**model_fields(args.size, args.dtype, attention, dropout))
    batch = args.batch_128 if seq == 128 else args.batch_512
    mesh = sharding.make_mesh((-1, 1, 1))
    objective = MlmNsp(config)
    run = train_runner(objective.model, objective, mesh, seq)
    data = pretraining_batch(batch, seq)
    seconds = timed(run, [data] * args.steps, [data] * args.warmup)
    per_second = batch * args.steps / seconds
    predictions = data["masked_lm_ids"].shape[1]
    achieved = per_second * objective.train_flops(seq, predictions)
    peak = flops.peak_flops(jax.devices()[0].device_kind, args.peak_flops or None)
    return {"sequences_per_s": per_second, "step_s": seconds / args.steps,
            "mfu": flops.mfu(achieved, jax.device_count(), peak),
            "tflops_per_s": achieved / 1e12, "batch": batch}  # fmt: skip


def bench_modernbert(args) -> dict:
    """ModernBERT-base-shaped MLM pre-training (30% masked), sequence 512, full rows."""
    import jax

    from bert import flops
    from bert.model import BertConfig
    from bert.objectives import Mlm
    from bert.training import sharding

    config = BertConfig(**modernbert_fields(args.size, args.dtype))
    mesh = sharding.make_mesh((-1, 1, 1))
    objective = Mlm(config)
    run = train_runner(objective.model, objective, mesh, 512)
    data = pretraining_batch(args.batch_512, 512, predictions=round(0.3 * 512))
    data = {k: data[k] for k in objective.batch_keys}
    seconds = timed(run, [data] * args.steps, [data] * args.warmup)
    per_second = args.batch_512 * args.steps / seconds
    achieved = per_second * objective.train_flops(512, data["masked_lm_ids"].shape[1])
    peak = flops.peak_flops(jax.devices()[0].device_kind, args.peak_flops or None)
    return {"sequences_per_s": per_second, "step_s": seconds / args.steps,
            "mfu": flops.mfu(achieved, jax.device_count(), peak),
            "tflops_per_s": achieved / 1e12, "batch": args.batch_512}  # fmt: skip


def bench_finetuning(args, multiple: int) -> dict:
    """SST-2-shaped steps: batch 32, max_seq_length 128, padded to 128 or cut to buckets."""
    from bert import losses
    from bert.finetuning.objective import Finetuning
    from bert.heads import BertForSequenceClassification
    from bert.model import BertConfig
    from bert.training import sharding

    config = BertConfig(**model_fields(args.size, args.dtype, "xla", 0.1))
    mesh = sharding.make_mesh((-1, 1, 1))
    model = BertForSequenceClassification(config, 2)
    objective = Finetuning(
        model, lambda logits, b: losses.classification_sums(logits, b["label"]),
        ("input_ids", "segment_ids", "input_mask"), ("label",),
    )  # fmt: skip
    run = train_runner(model, objective, mesh, 128)
    batches, real, positions = [], 0, 0
    for i in range(args.steps):
        lengths = sentence_lengths(32, 128, seed=i)
        width = bucket(int(lengths.max()), multiple, 128)
        rows = padded_rows(lengths, width, seed=i)
        rows["label"] = (np.arange(32) % 2).astype(np.int32)
        batches.append(rows)
        real, positions = real + int(lengths.sum()), positions + rows["input_ids"].size
    warmup = list({b["input_ids"].shape: b for b in batches}.values())  # one batch per shape
    seconds = timed(run, batches, warmup)
    return {"steps_per_s": args.steps / seconds, "sequences_per_s": 32 * args.steps / seconds,
            "padding_fraction": 1 - real / positions, "shapes": len(warmup)}  # fmt: skip


def bench_encoding(args) -> dict:
    """Sentences/s of mean-pooled embeddings: sorted by length, buckets of 16, up to 128."""
    import jax

    from bert.heads import BertForSentenceEmbedding
    from bert.model import BertConfig

    config = BertConfig(**model_fields(args.size, args.dtype, "xla", 0.0))
    model = BertForSentenceEmbedding(config)
    params = model.init(jax.random.key(0), np.ones((1, 16), np.int32))
    forward = jax.jit(lambda p, b: model.apply(p, b["input_ids"], None, b["input_mask"]))
    lengths = np.sort(sentence_lengths(args.encode_sentences, 128, seed=0))
    size = args.encode_batch
    batches = []
    for start in range(0, len(lengths), size):
        chunk = lengths[start : start + size]
        chunk = np.concatenate([chunk, np.full(size - len(chunk), chunk[0])])
        batches.append(padded_rows(chunk, bucket(int(chunk.max()), 16, 128), seed=start))
    warmup = list({b["input_ids"].shape: b for b in batches}.values())
    seconds = timed(lambda b: forward(params, b), batches, warmup)
    return {"sentences_per_s": len(lengths) / seconds, "shapes": len(warmup)}


def torch_worker(size: str, seq: int, batch: int, steps: int, warmup: int, bf16: bool) -> dict:
    """HF PyTorch BertForPreTraining: SDPA attention, bf16 autocast, torch.compile on CUDA."""
    import torch
    import transformers

    layers, width = SIZES[size]
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=width, num_hidden_layers=layers,
        num_attention_heads=width // 64, intermediate_size=4 * width,
        attn_implementation="sdpa",
    )  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01,
                            fused=device == "cuda")  # fmt: skip
    data = pretraining_batch(batch, seq)
    labels = np.full(data["input_ids"].shape, -100, np.int64)
    np.put_along_axis(labels, data["masked_lm_positions"], data["masked_lm_ids"], 1)
    inputs = {
        "input_ids": data["input_ids"], "attention_mask": data["input_mask"],
        "token_type_ids": data["segment_ids"], "labels": labels,
        "next_sentence_label": data["next_sentence_labels"],
    }  # fmt: skip
    inputs = {k: torch.from_numpy(v.astype(np.int64)).to(device) for k, v in inputs.items()}
    forward = torch.compile(model) if device == "cuda" else model

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = forward(**inputs).loss
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"sequences_per_s": batch * steps / seconds, "step_s": seconds / steps,
            "batch": batch, "torch": torch.__version__, "compiled": device == "cuda"}  # fmt: skip


def bench_torch(args, seq: int, done: dict) -> dict:
    """The HF PyTorch row of `seq`; one worker process measures every sequence length."""
    if not done:
        shapes = ",".join(
            f"{s}:{args.batch_128 if s == 128 else args.batch_512}" for s in PREDICTIONS
        )
        command = [sys.executable, os.path.abspath(__file__), f"--size={args.size}",
                   f"--torch_worker={shapes}", f"--steps={args.steps}",
                   f"--warmup={args.warmup}", f"--dtype={args.dtype}"]  # fmt: skip
        env = dict(os.environ, USE_TF="0", USE_FLAX="0", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
        lines = out.stdout.strip().splitlines()
        if out.returncode or not lines:
            done.update(
                {s: out.stderr.strip().splitlines()[-1:] or ["failed"] for s in PREDICTIONS}
            )
        else:
            done.update({int(k): v for k, v in json.loads(lines[-1]).items()})
    row = done[seq]
    if isinstance(row, list) or "error" in row:
        raise RuntimeError(row[0] if isinstance(row, list) else row["error"])
    return {**row, **mfu_of(args, seq, row["sequences_per_s"])}


def mfu_of(args, seq: int, per_second: float) -> dict:
    """MFU of `per_second` sequences counted with our FLOPs (MLM head on masked positions)."""
    import jax

    from bert import flops
    from bert.model import BertConfig
    from bert.objectives import MlmNsp

    config = BertConfig(**model_fields(args.size, args.dtype, "xla", 0.1))
    achieved = per_second * MlmNsp(config).train_flops(seq, PREDICTIONS[seq])
    peak = flops.peak_flops(jax.devices()[0].device_kind, args.peak_flops or None)
    return {"mfu": flops.mfu(achieved, jax.device_count(), peak),
            "tflops_per_s": achieved / 1e12}  # fmt: skip


def plan(args, backend: str) -> list[tuple[str, str, object]]:
    """(part, setting, () -> metrics) of every row, in table order."""
    attentions = ("xla", "cudnn") if backend == "gpu" else ("xla",)
    rows, done = [], {}  # done: the torch worker's rows
    for seq in (128, 512):
        for attention in attentions:
            rows.append(("pretrain ours", f"seq {seq}, {attention} attention",
                         lambda s=seq, a=attention: bench_pretraining(args, s, a)))  # fmt: skip
        rows.append(
            ("pretrain HF torch", f"seq {seq}, sdpa", lambda s=seq: bench_torch(args, s, done))
        )
    rows.append(("pretrain ModernBERT", "seq 512, MLM 30%, xla attention",
                 lambda: bench_modernbert(args)))  # fmt: skip
    for multiple in (0, 32):
        setting = "padded to 128" if multiple == 0 else "buckets of 32"
        rows.append(("finetune SST-2 shape", setting,
                     lambda m=multiple: bench_finetuning(args, m)))  # fmt: skip
    rows.append(("encode", "buckets of 16", lambda: bench_encoding(args)))
    return [r for r in rows if not args.parts or r[0].split()[0] in args.parts.split(",")]


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:,.0f}"
    return str(value)


def print_table(header: dict, rows: list[dict]) -> None:
    columns = ["part", "setting", "sequences_per_s", "steps_per_s", "sentences_per_s", "mfu",
               "tflops_per_s", "padding_fraction", "seconds", "error"]  # fmt: skip
    print(", ".join(f"{k}: {v}" for k, v in header.items()))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="auto", help="tiny..base; auto: base off CPU, else tiny")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 off CPU, else float32")
    parser.add_argument("--parts", default="", help="comma list of pretrain,finetune,encode")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (0: 20 off CPU, 3)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps (0: 3 off CPU, 1)")
    parser.add_argument("--batch_128", type=int, default=0, help="0: 256 off CPU, else 8")
    parser.add_argument("--batch_512", type=int, default=0, help="0: 64 off CPU, else 2")
    parser.add_argument("--encode_sentences", type=int, default=0, help="0: 16384 off CPU, 64")
    parser.add_argument("--encode_batch", type=int, default=0, help="0: 512 off CPU, else 16")
    parser.add_argument("--peak_flops", type=float, default=0.0, help="per device; 0: table")
    parser.add_argument("--timeout", type=int, default=300, help="seconds for the torch worker")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."),
                                                       "accelerator.json"))  # fmt: skip
    parser.add_argument("--torch_worker", help=argparse.SUPPRESS)
    return parser.parse_args()


def fill_defaults(args: argparse.Namespace, on_cpu: bool) -> None:
    big = not on_cpu
    defaults = {"size": "base" if big else "tiny", "dtype": "bfloat16" if big else "float32"}
    for name, value in defaults.items():
        if getattr(args, name) == "auto":
            setattr(args, name, value)
    numbers = {"steps": (20, 3), "warmup": (3, 1), "batch_128": (256, 8), "batch_512": (64, 2),
               "encode_sentences": (16384, 64), "encode_batch": (512, 16)}  # fmt: skip
    for name, (accelerator, cpu) in numbers.items():
        if not getattr(args, name):
            setattr(args, name, accelerator if big else cpu)


def main() -> None:
    args = parse_args()
    if args.torch_worker:
        out = {}
        for shape in args.torch_worker.split(","):
            seq, batch = (int(x) for x in shape.split(":"))
            bf16 = args.dtype == "bfloat16"
            try:
                out[seq] = torch_worker(args.size, seq, batch, args.steps, args.warmup, bf16)
            except Exception as e:  # the other length may still run (e.g. out of memory)
                traceback.print_exc()
                out[seq] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        print(json.dumps(out))
        return
    sys.path.insert(0, ROOT)
    # JAX takes GPU memory as it needs it, leaving the rest to the PyTorch worker process.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    backend = jax.default_backend()
    fill_defaults(args, backend == "cpu")
    header = {"device": jax.devices()[0].device_kind, "devices": jax.device_count(),
              "backend": backend, "jax": jax.__version__, "size": args.size, "dtype": args.dtype,
              "steps": args.steps, "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d", time.gmtime())}  # fmt: skip
    rows = []
    for part, setting, measure in plan(args, backend):
        start = time.perf_counter()
        row = {"part": part, "setting": setting}
        try:
            row.update(measure())
        except Exception as e:  # a failing part is a row, the others still run
            traceback.print_exc()
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print_table(header, rows)
    with open(args.json, "w") as f:
        json.dump({**header, "rows": rows, "command": " ".join(sys.argv)}, f, indent=1)
    print(f"wrote {args.json}\ncommand: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
