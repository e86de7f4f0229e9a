"""Layers stacked with nn.scan vs unrolled: compile time and training-step time.

A BERT-base-width encoder (hidden 768, 12 heads, intermediate 3072, 30,522-token vocabulary)
with each --layers count, its layers unrolled (`model.scan_layers` false) or scanned, each
--remat policy, trains on random ids (float32, dropout on): one jitted step is the forward
pass, the backward pass and an AdamW update (optax, BERT's weight-decay mask). The compile
time is the step's lowering and compilation, the persistent compilation cache off; the step
time the median of --steps timed steps after --warmup untimed ones. Each row runs in its own
process, so peak memory is its own. Prints a table and the command that reproduces it.

  python bench/scan_layers.py --layers=12,24 --batch=8 --seq=128
"""

import argparse
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
LAYOUTS = ("unrolled", "scan")


def make_step(layers: int, layout: str, remat: str, batch: int, seq: int, dropout: float):
    """(the jitted step, its initial state, its batch): BertModel of BERT-base width."""
    sys.path.insert(0, ROOT)
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    from bert.model import BertConfig, BertModel
    from bert.training import optim

    config = BertConfig(vocab_size=30522, num_layers=layers, hidden_dropout=dropout,
                        attention_dropout=dropout, scan_layers=layout == "scan",
                        remat=remat)  # fmt: skip
    model = BertModel(config)
    tx = optax.adamw(1e-4, weight_decay=0.01, mask=optim.matrices_mask)
    rng = np.random.default_rng(0)
    data = {"input_ids": jnp.asarray(rng.integers(5, 30522, (batch, seq)), jnp.int32),
            "segment_ids": jnp.asarray(np.arange(seq)[None] >= seq // 2, jnp.int32)
            .repeat(batch, 0), "input_mask": jnp.ones((batch, seq), jnp.int32)}  # fmt: skip
    init = jax.jit(lambda key: nn.meta.unbox(model.init(key, data["input_ids"][:1])["params"]))
    params = init(jax.random.key(0))

    def loss_fn(params, key):
        seq_out, pooled = model.apply({"params": params}, **data, deterministic=False,
                                      rngs={"dropout": key})  # fmt: skip
        return jnp.mean(jnp.square(seq_out)) + jnp.mean(jnp.square(pooled))

    def step(state, key):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return jax.jit(step, donate_argnums=0), (params, tx.init(params))


def worker(layers: int, layout: str, remat: str, args) -> dict:
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    step, state = make_step(layers, layout, remat, args.batch, args.seq, args.dropout)
    key = jax.random.key(1)
    start = time.perf_counter()
    compiled = step.lower(state, key).compile()
    compile_s = time.perf_counter() - start
    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        state, loss = compiled(state, jax.random.fold_in(key, i))
        jax.block_until_ready(loss)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "layers": layers,
        "layout": layout,
        "remat": remat,
        "compile_s": compile_s,
        "step_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "tokens_per_s": args.batch * args.seq / median,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="12,24")
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--remat", default="none", help="policies, comma-separated: none,full,dots")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        layers, layout, remat = args.worker.split(":")
        print(json.dumps(worker(int(layers), layout, remat, args)))
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="")
    rows = []
    for layers in args.layers.split(","):
        for layout in args.layouts.split(","):
            for remat in args.remat.split(","):
                command = [sys.executable, os.path.abspath(__file__),
                           f"--worker={layers}:{layout}:{remat}", f"--batch={args.batch}",
                           f"--seq={args.seq}", f"--dropout={args.dropout}",
                           f"--warmup={args.warmup}", f"--steps={args.steps}"]  # fmt: skip
                out = subprocess.run(command, capture_output=True, text=True, env=env)
                if out.returncode:
                    print(out.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"{layers}:{layout}:{remat} failed")
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}; BERT-base width, batch {args.batch}, sequence {args.seq}, "
          f"float32, dropout {args.dropout}, AdamW; median of {args.steps} steps")  # fmt: skip
    print("| layers | layers as | remat | compile (s) | step (s) | min-max (s) | tokens/s | "
          "step vs unrolled | peak RSS (MB) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        peers = [r for r in rows if r["layers"] == row["layers"] and r["layout"] == "unrolled"
                 and r["remat"] == "none"]  # fmt: skip
        ratio = f"{row['step_s'] / peers[0]['step_s']:.2f}x" if peers else "-"
        print(f"| {row['layers']} | {row['layout']} | {row['remat']} | {row['compile_s']:.1f} | "
              f"{row['step_s']:.3f} | {row['min_s']:.3f}-{row['max_s']:.3f} | "
              f"{row['tokens_per_s']:.0f} | {ratio} | {row['peak_rss_mb']:.0f} |")  # fmt: skip
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
