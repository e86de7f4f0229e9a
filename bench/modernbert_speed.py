"""ModernBERT forward + backward: this project vs transformers' PyTorch ModernBertForMaskedLM.

Both run the same ModernBERT-shaped encoder (transformers' ModernBertConfig defaults, i.e.
ModernBERT-base: 22 layers, width 768, GeGLU 1152, a 128-token local window with a global
layer every third, rotary positions; `--size=tiny` for a seconds-long check) on the same batch
of 8 rows of 512 tokens, 30% of the real tokens masked, float32, dropout off, and take the
gradient of the masked-LM loss with respect to every parameter (no optimizer update). Both
compute the vocabulary logits on the masked positions only (transformers:
`sparse_prediction=True`; ours: the MLM head on `masked_positions`).

Two layouts of the same rows:
  padded: one text per row, lengths uniform in [128, 512], padding after it;
  packed: texts of those lengths one after another in each row until it is full, every
          position real; ours gives each text its own positions and attention
          (`position_ids` restarting at 0). transformers' CPU path has no packed attention
          (its unpadded path needs flash-attn on a GPU), so it gets the same rows as one text
          each: the same matrix shapes, attention across the texts.
Tokens/s counts real tokens. Each implementation runs in its own process; the step time is the
median of --steps timed steps after --warmup untimed ones.

  python bench/modernbert_speed.py                       # ModernBERT-base, both layouts
  python bench/modernbert_speed.py --size=tiny --steps=2
  python bench/modernbert_speed.py --attention      # one layer's attention alone, and
                                                    # our kernels at smaller shapes
"""

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLS = ("ours", "torch")
LAYOUTS = ("padded", "packed")
ATTENTION_KINDS = ("xla", "chunked")  # bert/attention.py kernels timed by --attention
MASK_RATE = 0.30  # ModernBERT's masking rate
TINY = dict(vocab_size=1024, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=96, local_attention=32, pad_token_id=0, eos_token_id=1,
            bos_token_id=2, cls_token_id=2, sep_token_id=1)  # fmt: skip


def hf_config(size: str):
    import transformers

    fields = TINY if size == "tiny" else {}
    config = transformers.ModernBertConfig(
        **fields, reference_compile=False, sparse_prediction=True
    )
    config._attn_implementation = "sdpa"  # transformers' fastest CPU attention
    return config


def make_batch(layout: str, batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
    """ids, mask, position ids and the masked positions (the same count in every row)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(batch, seq)).astype(np.int32)
    mask = np.ones((batch, seq), np.int32)
    positions = np.tile(np.arange(seq, dtype=np.int32), (batch, 1))
    for row in range(batch):
        if layout == "padded":
            mask[row, rng.integers(seq // 4, seq + 1) :] = 0
            continue
        start = 0
        while start < seq:  # texts of the padded layout's lengths, the last one cut
            length = int(rng.integers(seq // 4, seq + 1))
            positions[row, start : start + length] = np.arange(min(length, seq - start))
            start += length
    ids = ids * mask
    predictions = int(MASK_RATE * mask.sum(1).min())
    masked = np.stack([np.sort(rng.choice(np.flatnonzero(m), predictions, replace=False))
                       for m in mask]).astype(np.int32)  # fmt: skip
    targets = np.take_along_axis(ids, masked, 1)
    return {"input_ids": ids, "input_mask": mask, "position_ids": positions,
            "masked_positions": masked, "masked_ids": targets}  # fmt: skip


def step_ours(size: str, batch: dict, layout: str):
    sys.path.insert(0, ROOT)
    import jax
    import jax.numpy as jnp
    import optax

    from bert.convert import modernbert_table
    from bert.heads import BertForPreTraining

    config = modernbert_table.config_from_hf(hf_config(size).to_dict(), "config.json")
    model = BertForPreTraining(config, with_nsp=False, with_pooler=False)
    ids = jnp.asarray(batch["input_ids"])
    positions = jnp.asarray(batch["position_ids"]) if layout == "packed" else None
    params = model.init(jax.random.key(0), ids[:1, :8])["params"]

    def loss_fn(params):
        out = model.apply({"params": params}, ids, None, batch["input_mask"],
                          masked_positions=batch["masked_positions"],
                          position_ids=positions)  # fmt: skip
        return optax.softmax_cross_entropy_with_integer_labels(
            out["mlm_logits"], batch["masked_ids"]
        ).mean()

    grad = jax.jit(jax.value_and_grad(loss_fn))

    def run():
        jax.block_until_ready(grad(params))

    return run


def step_torch(size: str, batch: dict, layout: str):
    import torch
    import transformers

    del layout  # no packed attention on CPU: the packed rows run as one text each
    torch.manual_seed(0)
    model = transformers.ModernBertForMaskedLM(hf_config(size)).eval()  # eval: dropout off
    labels = np.full(batch["input_ids"].shape, -100, np.int64)
    np.put_along_axis(labels, batch["masked_positions"], batch["masked_ids"], 1)
    inputs = {
        "input_ids": torch.from_numpy(batch["input_ids"].astype(np.int64)),
        "attention_mask": torch.from_numpy(batch["input_mask"].astype(np.int64)),
        "labels": torch.from_numpy(labels),
    }

    def run():
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()

    return run


def attention_worker(steps: int) -> dict:
    """One layer's attention alone, forward + backward, at ModernBERT-base's shapes (batch 8,
    512 tokens, 12 heads of 64, padded rows): ours (bert/attention.py's xla and chunked
    kernels) and PyTorch's scaled_dot_product_attention with the same mask, in one process."""
    sys.path.insert(0, ROOT)
    import jax
    import jax.numpy as jnp
    import torch

    from bert.attention import attend

    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(8, 512, 12, 64)).astype(np.float32) for _ in range(3))
    mask = np.arange(512)[None] < rng.integers(128, 513, 8)[:, None]  # [batch, kv_length]
    full = jnp.asarray(mask[:, None, None, :])

    def grad_of(kind):
        def loss(q, k, v):
            return jnp.sum(attend(kind, q, k, v, full, jnp.asarray(mask, jnp.int32)))

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))

    tq, tk, tv = (torch.from_numpy(x).transpose(1, 2).contiguous().requires_grad_()
                  for x in (q, k, v))  # fmt: skip
    torch_mask = torch.from_numpy(mask[:, None, None, :])

    def torch_step():
        out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch_mask)
        out.sum().backward()

    inputs = list(map(jnp.asarray, (q, k, v)))
    runs = {kind: functools.partial(lambda g: jax.block_until_ready(g(*inputs)), grad_of(kind))
            for kind in ATTENTION_KINDS}  # fmt: skip
    runs["torch"] = torch_step
    out = {}
    for name, run in runs.items():
        run()
        out[name] = statistics.median(timed_steps(run, steps))
    return out


def kernel_sizes(steps: int) -> list[str]:
    """XLA's and the chunked kernel alone at smaller shapes (12 heads of 64, padded rows):
    first call (compile) and step, by which `auto`'s CHUNKED_FROM_BYTES threshold is set."""
    rng = np.random.default_rng(0)
    lines = []
    for batch, length in ((8, 64), (8, 128), (32, 128), (8, 256), (16, 256)):
        qkv = [rng.normal(size=(batch, length, 12, 64)).astype(np.float32) for _ in range(3)]
        mask = np.arange(length)[None] < rng.integers(length // 4, length + 1, batch)[:, None]
        cells = [f"{kind} {1000 * step:.1f} ms (first call {first:.2f} s)"
                 for kind in ATTENTION_KINDS
                 for first, step in [_kernel_times(kind, qkv, mask, steps)]]  # fmt: skip
        mib = 4 * batch * 12 * length * length / 2**20
        lines.append(f"  batch {batch} x {length} ({mib:.0f} MiB of scores): " + ", ".join(cells))
    return lines


def _kernel_times(kind: str, qkv: list, mask: np.ndarray, steps: int) -> tuple[float, float]:
    """(first call, median step) of one kernel's forward + backward, in seconds."""
    sys.path.insert(0, ROOT)
    import jax
    import jax.numpy as jnp

    from bert.attention import attend

    full, input_mask = jnp.asarray(mask[:, None, None, :]), jnp.asarray(mask, jnp.int32)
    inputs = [jnp.asarray(x) for x in qkv]

    def loss(q, k, v):
        return jnp.sum(attend(kind, q, k, v, full, input_mask))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    start = time.perf_counter()
    jax.block_until_ready(grad(*inputs))
    first = time.perf_counter() - start
    times = timed_steps(lambda: jax.block_until_ready(grad(*inputs)), steps)
    return first, statistics.median(times)


def timed_steps(run, steps: int) -> list[float]:
    """Seconds of each of `steps` calls of `run`."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def worker(impl: str, layout: str, size: str, warmup: int, steps: int) -> dict:
    vocab = hf_config(size).vocab_size
    batch = make_batch(layout, 8, 512, vocab)
    run = {"ours": step_ours, "torch": step_torch}[impl](size, batch, layout)
    compile_start = time.perf_counter()
    run()  # ours compiles here
    first = time.perf_counter() - compile_start
    for _ in range(warmup):
        run()
    times = timed_steps(run, steps)
    median = statistics.median(times)
    return {"impl": impl, "layout": layout, "step_s": median, "min_s": min(times),
            "max_s": max(times), "first_s": first,
            "tokens_per_s": float(batch["input_mask"].sum()) / median,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="base", choices=("base", "tiny"))
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--attention", action="store_true",
                        help="time one layer's attention alone, ours vs torch's SDPA")  # fmt: skip
    args = parser.parse_args()
    if args.attention:
        times = attention_worker(max(args.steps, 5))
        print("attention forward + backward, batch 8 x 512, 12 heads of 64, padded, float32: "
              f"torch SDPA {times['torch']:.3f} s")  # fmt: skip
        for kind in ATTENTION_KINDS:
            print(f"  ours, {kind}: {times[kind]:.3f} s, {times['torch'] / times[kind]:.2f}x")
        print("ours alone at smaller shapes, forward + backward:")
        print("\n".join(kernel_sizes(max(args.steps, 5))))
        print("command: python " + " ".join(sys.argv))
        return
    if args.worker:
        impl, layout = args.worker.split(":")
        print(json.dumps(worker(impl, layout, args.size, args.warmup, args.steps)))
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="")
    rows = []
    for layout in args.layouts.split(","):
        for impl in IMPLS:
            command = [sys.executable, os.path.abspath(__file__), f"--worker={impl}:{layout}",
                       f"--size={args.size}", f"--warmup={args.warmup}",
                       f"--steps={args.steps}"]  # fmt: skip
            out = subprocess.run(command, capture_output=True, text=True, env=env)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{impl}:{layout} failed")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; ModernBERT-{args.size}, "
          f"batch 8 x 512, float32, forward + backward, median of {args.steps} steps")  # fmt: skip
    print("| layout | implementation | step (s) | min-max (s) | first call (s) | real tokens/s "
          "| ours vs it | peak RSS (MB) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ours = next(r for r in rows if r["layout"] == row["layout"] and r["impl"] == "ours")
        ratio = ours["tokens_per_s"] / row["tokens_per_s"]
        print(f"| {row['layout']} | {row['impl']} | {row['step_s']:.2f} | "
              f"{row['min_s']:.2f}-{row['max_s']:.2f} | {row['first_s']:.1f} | "
              f"{row['tokens_per_s']:.0f} | {ratio:.2f}x | {row['peak_rss_mb']:.0f} |")  # fmt: skip
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
