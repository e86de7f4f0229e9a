"""Dropout's cost: bert/dropout.py's unrolled Threefry masks against JAX's own (rolled on CPU).

Both draw the same masks bit for bit (tests/test_dropout.py); only the time differs. Timed,
all-MiniLM-L6-v2's shape (random weights, float32, one device), batch --batch x --length:

- masks: the attention-probability masks of one step, [layers, batch, heads, length, length],
  `bert.dropout.bernoulli` against `jax.random.bernoulli`, each jitted;
- fwd+bwd: the gradient of a mean-pooled sentence embedding's squared norm (the encoder's
  forward and backward), with our dropout, with JAX's masks (`bert.dropout.bernoulli` replaced
  by `jax.random.bernoulli` for the run), and without dropout.

The variants are timed in turns, --rounds times, each turn the median of --repeats calls after
two untimed ones; the figure is the median over the rounds (the machine's speed drifts).

  python bench/dropout.py --batch=16 --length=128
"""

import argparse
import os
import statistics
import sys

import finetune_step_parts as parts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mask_fns(args: argparse.Namespace) -> dict:
    import jax

    from bert import dropout

    shape = (parts.MINILM["num_layers"], args.batch, parts.MINILM["num_heads"], args.length,
             args.length)  # fmt: skip
    key = jax.random.key(0)
    ours = jax.jit(lambda k: dropout.bernoulli(k, 0.9, shape))
    theirs = jax.jit(lambda k: jax.random.bernoulli(k, 0.9, shape))
    if not bool((ours(key) == theirs(key)).all()):
        raise SystemExit("the two masks differ: bert/dropout.py is broken (tests/test_dropout.py)")
    return {
        "masks: ours (unrolled)": lambda: ours(key).block_until_ready(),
        "masks: jax.random.bernoulli": lambda: theirs(key).block_until_ready(),
    }


def grad_fns(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp

    from bert import dropout
    from bert.model import BertConfig, BertModel

    model = BertModel(BertConfig(**parts.MINILM))
    b = parts.batch_of(args.batch, args.length)
    ids, segments, mask = (jnp.asarray(b[k]) for k in ("input_ids", "segment_ids", "input_mask"))
    params = model.init(jax.random.key(0), ids)

    def loss(p, deterministic):
        hidden, _ = model.apply(p, ids, segments, mask, deterministic,
                                rngs={"dropout": jax.random.key(1)})  # fmt: skip
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return jnp.sum(pooled**2)

    def compiled(deterministic: bool):
        return jax.jit(jax.grad(loss), static_argnums=1).lower(params, deterministic).compile()

    with_ours, without = compiled(False), compiled(True)
    unrolled = dropout.bernoulli
    dropout.bernoulli = jax.random.bernoulli  # JAX's masks: its own (rolled) threefry
    try:
        with_jax = compiled(False)
    finally:
        dropout.bernoulli = unrolled
    return {
        "fwd+bwd: dropout, ours": lambda: jax.block_until_ready(with_ours(params)),
        "fwd+bwd: dropout, JAX's masks": lambda: jax.block_until_ready(with_jax(params)),
        "fwd+bwd: no dropout": lambda: jax.block_until_ready(without(params)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    fns = {**mask_fns(args), **grad_fns(args)}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            times[name].append(parts.median_seconds(fn, args.repeats))
    print(f"batch {args.batch} x length {args.length}, MiniLM-L6 shape, float32, ms (median of "
          f"{args.rounds} rounds of {args.repeats} calls; min-max over rounds)")  # fmt: skip
    print("| part | ms | range |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {1000 * statistics.median(seconds):.1f} | "
              f"{1000 * min(seconds):.1f}-{1000 * max(seconds):.1f} |")  # fmt: skip
    median = {name: statistics.median(s) for name, s in times.items()}
    mask_ratio = median["masks: jax.random.bernoulli"] / median["masks: ours (unrolled)"]
    base = median["fwd+bwd: no dropout"]
    ours = 1000 * (median["fwd+bwd: dropout, ours"] - base)
    theirs = 1000 * (median["fwd+bwd: dropout, JAX's masks"] - base)
    print(
        f"masks: ours {mask_ratio:.1f}x faster; dropout adds to fwd+bwd: ours {ours:.0f} ms, "
        f"JAX's masks {theirs:.0f} ms"
    )


if __name__ == "__main__":
    main()
