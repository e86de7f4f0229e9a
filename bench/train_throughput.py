"""Pre-training step throughput: this project vs HF FlaxBertForPreTraining vs HF PyTorch.

Each (size, implementation) runs in its own process, so peak memory is its own. Every
implementation trains on the same batch (random ids, 15% masked positions, 50% NSP labels)
in float32 with dropout on; the step time is the median of --steps timed steps after
--warmup untimed ones. Prints a table and the command that reproduces it.

  python bench/train_throughput.py --sizes=base,mini,tiny --batch=8 --seq=128
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
IMPLS = ("ours", "hf_flax", "hf_torch")


def make_batch(batch: int, seq: int, vocab: int, predictions: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(batch, seq)).astype(np.int32)
    positions = np.stack([np.sort(rng.choice(np.arange(1, seq), predictions, replace=False))
                          for _ in range(batch)]).astype(np.int32)  # fmt: skip
    return {
        "input_ids": ids,
        "segment_ids": (np.arange(seq)[None] >= seq // 2).repeat(batch, 0).astype(np.int32),
        "input_mask": np.ones((batch, seq), np.int32),
        "masked_lm_positions": positions,
        "masked_lm_ids": np.take_along_axis(ids, positions, 1),
        "masked_lm_weights": np.ones((batch, predictions), np.float32),
        "next_sentence_labels": rng.integers(0, 2, size=batch).astype(np.int32),
    }


def full_labels(batch: dict) -> np.ndarray:
    """HF-style labels: the original id at masked positions, -100 elsewhere."""
    labels = np.full(batch["input_ids"].shape, -100, np.int64)
    np.put_along_axis(labels, batch["masked_lm_positions"], batch["masked_lm_ids"], 1)
    return labels


def hf_config(size: str):
    """The transformers BertConfig of one of our sizes (30,522-token vocabulary)."""
    import transformers

    sys.path.insert(0, ROOT)
    from configs import common

    m = common.model_config(size, 30522)
    return transformers.BertConfig(
        vocab_size=30522, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads, intermediate_size=m.intermediate_size,
    )  # fmt: skip


def step_ours(size: str, batch: dict):
    sys.path.insert(0, ROOT)
    import jax

    from bert.model import BertConfig
    from bert.objectives import MlmNsp
    from bert.training import optim, sharding
    from bert.training import step as train_step
    from configs import common

    config = BertConfig.from_dict(common.model_config(size, 30522).to_dict())
    mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
    objective = MlmNsp(config)
    model = objective.model
    schedule = optim.learning_rate_schedule(1e-4, 0, 1000)
    tx = optim.make_optimizer("adamw", schedule, 0.01, clip_norm=None)
    seq = batch["input_ids"].shape[1]
    state = train_step.create_train_state(model, tx, mesh, 0, seq)
    _, shardings = train_step.state_shardings(model, tx, mesh, seq)
    step = train_step.compile_train_step(objective, tx, schedule, mesh, shardings)
    device_batch = sharding.global_batch(batch, mesh)
    holder = {"state": state}

    def run():
        holder["state"], metrics = step(holder["state"], device_batch)
        jax.block_until_ready(metrics["loss"])

    return run


def step_hf_flax(size: str, batch: dict):
    import jax
    import jax.numpy as jnp
    import optax
    import transformers

    config = hf_config(size)
    model = transformers.FlaxBertForPreTraining(config, seed=0, dtype=jnp.float32)
    tx = optax.adamw(1e-4, weight_decay=0.01)
    labels = jnp.asarray(full_labels(batch))
    nsp = jnp.asarray(batch["next_sentence_labels"])

    def loss_fn(params, rng):
        out = model(
            batch["input_ids"], batch["input_mask"], batch["segment_ids"],
            params=params, dropout_rng=rng, train=True,
        )  # fmt: skip
        mask = labels >= 0
        mlm = optax.softmax_cross_entropy_with_integer_labels(
            out.prediction_logits, jnp.where(mask, labels, 0)
        )
        mlm = jnp.sum(mlm * mask) / jnp.sum(mask)
        ns = optax.softmax_cross_entropy_with_integer_labels(out.seq_relationship_logits, nsp)
        return mlm + jnp.mean(ns)

    @jax.jit
    def step(params, opt_state, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    holder = {"params": model.params, "opt": tx.init(model.params), "rng": jax.random.key(0)}

    def run():
        holder["rng"], rng = jax.random.split(holder["rng"])
        holder["params"], holder["opt"], loss = step(holder["params"], holder["opt"], rng)
        jax.block_until_ready(loss)

    return run


def step_hf_torch(size: str, batch: dict):
    import torch
    import transformers

    config = hf_config(size)
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    inputs = {
        "input_ids": torch.from_numpy(batch["input_ids"].astype(np.int64)),
        "attention_mask": torch.from_numpy(batch["input_mask"].astype(np.int64)),
        "token_type_ids": torch.from_numpy(batch["segment_ids"].astype(np.int64)),
        "labels": torch.from_numpy(full_labels(batch)),
        "next_sentence_label": torch.from_numpy(batch["next_sentence_labels"].astype(np.int64)),
    }

    def run():
        opt.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()
        opt.step()

    return run


def worker(impl: str, size: str, batch: int, seq: int, warmup: int, steps: int) -> dict:
    data = make_batch(batch, seq, 30522, max(1, round(0.15 * seq)))
    run = {"ours": step_ours, "hf_flax": step_hf_flax, "hf_torch": step_hf_torch}[impl](size, data)
    for _ in range(warmup):
        run()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "impl": impl,
        "size": size,
        "step_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "tokens_per_s": batch * seq / median,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="base,mini,tiny")
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        impl, size = args.worker.split(":")
        print(json.dumps(worker(impl, size, args.batch, args.seq, args.warmup, args.steps)))
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="")
    rows = []
    for size in args.sizes.split(","):
        for impl in args.impls.split(","):
            command = [sys.executable, os.path.abspath(__file__), f"--worker={impl}:{size}",
                       f"--batch={args.batch}", f"--seq={args.seq}", f"--warmup={args.warmup}",
                       f"--steps={args.steps}"]  # fmt: skip
            out = subprocess.run(command, capture_output=True, text=True, env=env)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{impl}:{size} failed")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}; batch {args.batch}, sequence {args.seq}, float32, "
          f"median of {args.steps} steps")  # fmt: skip
    print(
        "| size | implementation | step (s) | min-max (s) | tokens/s | ours vs it | peak RSS (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ours = next(r for r in rows if r["size"] == row["size"] and r["impl"] == "ours")
        ratio = ours["tokens_per_s"] / row["tokens_per_s"]
        print(f"| {row['size']} | {row['impl']} | {row['step_s']:.3f} | "
              f"{row['min_s']:.3f}-{row['max_s']:.3f} | {row['tokens_per_s']:.0f} | "
              f"{ratio:.2f}x | {row['peak_rss_mb']:.0f} |")  # fmt: skip
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
