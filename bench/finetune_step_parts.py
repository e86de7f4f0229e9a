"""Where a fine-tuning step's time goes: all-MiniLM-L6-v2's shape on SST-2, ours vs HF PyTorch.

Times the parts of one training step of a sequence classifier (batch --batch, lengths
--lengths, float32, one device): the forward pass alone, forward and backward without dropout,
forward and backward with dropout (under each JAX PRNG implementation given in --prng; threefry
keys draw their masks through bert/dropout.py's unrolled hash, the others through JAX's own),
the optimizer update alone (global-norm clipping + AdamW over every parameter), and the whole
jitted train step (bert/training/step.py). HF PyTorch's `BertForSequenceClassification` is
timed the same way (the forward in eval mode, forward and backward with dropout, clipping +
torch AdamW). Then one float32 matmul of the model's shapes at batch x the first length tokens,
torch against jitted JAX (GFLOP/s). Weights are random (timing does not depend on them). Each
figure is the median of --repeats calls after two untimed ones.

  python bench/finetune_step_parts.py --lengths=16,32,48 --batch=32
"""

import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM = dict(
    vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536
)  # all-MiniLM-L6-v2


def median_seconds(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def batch_of(batch: int, length: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.ones((batch, length), np.int32)
    mask[:, length * 3 // 4 :] = rng.integers(0, 2, (batch, length - length * 3 // 4))
    return {
        "input_ids": rng.integers(1000, 30000, (batch, length)).astype(np.int32),
        "segment_ids": np.zeros((batch, length), np.int32),
        "input_mask": mask,
        "label": rng.integers(0, 2, batch).astype(np.int32),
    }


def ours(args: argparse.Namespace, length: int, prng: str) -> dict[str, float]:
    """The parts of our step at one length, dropout keys from the `prng` implementation."""
    import jax
    import jax.numpy as jnp
    import optax

    sys.path.insert(0, ROOT)
    from bert import losses
    from bert.finetuning.objective import Finetuning
    from bert.heads import BertForSequenceClassification
    from bert.model import BertConfig
    from bert.tasks.features import ENCODER_INPUTS
    from bert.training import optim, step

    model = BertForSequenceClassification(BertConfig(**MINILM), 2)
    loss = lambda out, b: losses.classification_sums(out, b["label"])  # noqa: E731
    objective = Finetuning(model, loss, ENCODER_INPUTS, ("label",))
    batch = {k: jnp.asarray(v) for k, v in batch_of(args.batch, length).items()}
    params = model.init(jax.random.key(0), batch["input_ids"])["params"]
    schedule = optim.learning_rate_schedule(2e-5, 10, 1000)
    tx = optim.make_optimizer("adamw", schedule, 0.01, eps=1e-6, clip_norm=1.0)
    opt_state = tx.init(params)
    rng = jax.random.key(1, impl=prng)
    totals = objective.totals_fn(batch)

    forward = jax.jit(lambda p: model.apply({"params": p}, *(batch[k] for k in ENCODER_INPUTS)))
    grad = jax.jit(jax.grad(lambda p, r: objective.loss_fn(p, batch, {"dropout": r}, totals)[0]))
    update = jax.jit(lambda g, s, p: optax.apply_updates(p, tx.update(g, s, p)[0]))
    train = jax.jit(functools.partial(step.train_step, objective=objective, tx=tx,
                                      schedule=schedule, seed=1))  # fmt: skip
    state = step.TrainState(jnp.zeros((), jnp.int32), params, opt_state)
    grads = grad(params, rng)

    def block(x):
        return jax.block_until_ready(x)

    with jax.default_prng_impl(prng):
        return {
            "forward": median_seconds(lambda: block(forward(params)), args.repeats),
            "fwd+bwd, no dropout": median_seconds(lambda: block(grad(params, None)), args.repeats),
            f"fwd+bwd, dropout ({prng})": median_seconds(
                lambda: block(grad(params, rng)), args.repeats
            ),
            "clip + AdamW update": median_seconds(
                lambda: block(update(grads, opt_state, params)), args.repeats
            ),
            f"whole train step ({prng})": median_seconds(
                lambda: block(train(state, batch)), args.repeats
            ),
        }


def hf_torch(args: argparse.Namespace, length: int) -> dict[str, float]:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=MINILM["vocab_size"], hidden_size=384, num_hidden_layers=6,
        num_attention_heads=12, intermediate_size=1536, num_labels=2,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)
    model.train()
    b = batch_of(args.batch, length)
    inputs = {
        "input_ids": torch.as_tensor(b["input_ids"], dtype=torch.long),
        "attention_mask": torch.as_tensor(b["input_mask"], dtype=torch.long),
        "labels": torch.as_tensor(b["label"], dtype=torch.long),
    }
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, eps=1e-6, weight_decay=0.01)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()

    def update():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def whole():
        fwd_bwd()
        update()

    fwd_bwd()
    model.eval()  # the forward alone as inference runs it (no dropout), as ours above
    with torch.no_grad():
        forward = median_seconds(lambda: model(**inputs), args.repeats)
    model.train()
    return {
        "forward": forward,
        "fwd+bwd, dropout (torch)": median_seconds(fwd_bwd, args.repeats),
        "clip + AdamW update": median_seconds(update, args.repeats),
        "whole train step (torch)": median_seconds(whole, args.repeats),
    }


def matmul_rates(tokens: int, repeats: int) -> dict[str, tuple[float, float]]:
    """GFLOP/s of one float32 matmul of the model's shapes, torch against a jitted JAX `@`."""
    import jax
    import numpy as np
    import torch

    shapes = {
        "[tokens, 384] x [384, 1536]": (tokens, 384, 1536),
        "[tokens, 1536] x [1536, 384]": (tokens, 1536, 384),
        "[384, tokens] x [tokens, 1536] (weight gradient)": (384, tokens, 1536),
    }
    rates = {}
    matmul = jax.jit(lambda x, y: x @ y)
    for name, (m, k, n) in shapes.items():
        a, b = np.ones((m, k), np.float32), np.ones((k, n), np.float32)
        ta, tb, ja, jb = (
            torch.from_numpy(a),
            torch.from_numpy(b),
            jax.numpy.asarray(a),
            jax.numpy.asarray(b),
        )
        flops = 2 * m * k * n / 1e9
        torch_s = median_seconds(lambda: ta @ tb, repeats)  # noqa: B023
        jax_s = median_seconds(lambda: matmul(ja, jb).block_until_ready(), repeats)  # noqa: B023
        rates[name] = (flops / torch_s, flops / jax_s)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lengths", default="16,32,48")
    parser.add_argument("--prng", default="threefry2x32,rbg,unsafe_rbg")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--which", default="both", choices=("both", "ours", "hf"))
    args = parser.parse_args()
    rows: dict[str, dict[int, float]] = {}
    lengths = [int(x) for x in args.lengths.split(",")]
    for length in lengths:
        parts = []
        if args.which != "hf":
            for prng in args.prng.split(","):
                parts += [(f"ours: {k}", v) for k, v in ours(args, length, prng).items()]
        if args.which != "ours":
            parts += [(f"HF: {k}", v) for k, v in hf_torch(args, length).items()]
        for name, seconds in parts:
            rows.setdefault(name, {})[length] = seconds
        print(f"length {length} done", file=sys.stderr, flush=True)
    print(f"batch {args.batch}, MiniLM-L6 shape, float32, ms per call (median of {args.repeats})")
    print("| part | " + " | ".join(f"length {n}" for n in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    for name, by_length in rows.items():
        cells = " | ".join(f"{1000 * by_length[n]:.1f}" if n in by_length else "" for n in lengths)
        print(f"| {name} | {cells} |")
    tokens = args.batch * lengths[0]
    print(f"\nfloat32 matmul throughput at {tokens} tokens (batch x length {lengths[0]}), GFLOP/s")
    print("| shape | torch | JAX (XLA:CPU) |")
    print("|---|---|---|")
    for name, (torch_rate, jax_rate) in matmul_rates(tokens, args.repeats).items():
        print(f"| {name} | {torch_rate:.0f} | {jax_rate:.0f} |")
    print("command: python bench/finetune_step_parts.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
