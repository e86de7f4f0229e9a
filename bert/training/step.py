"""The training state and the generic steps: abstract, sharded state creation; the pure train
step (any objective, exact gradient accumulation) and evaluation step, each jitted once with
explicit shardings (the state donated); host-side reduction of their metrics.

The steps know no objective: they take anything shaped as `Objective` (a pre-training objective
of bert/objectives/, a fine-tuning head's loss of bert/finetuning/objective.py).
"""

import functools
import zlib
from collections.abc import Callable
from typing import Any, Protocol

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from bert.training import optim, sharding
from util.errors import UserError

Array = jax.Array
Batch = dict[str, Array]
Metrics = dict[str, Array]
Sums = dict[str, tuple[Array, Array]]
# The objective's own random stream, beside dropout's: its keys are fold_in(fold_in(key(seed),
# OBJECTIVE_STREAM), step), dropout's fold_in(key(seed), step).
OBJECTIVE_STREAM = zlib.crc32(b"objective")


class Objective(Protocol):
    """What the generic steps minimise.

    Attributes:
      batch_keys: the keys of a training batch (inputs and labels), in the order the step's
        shardings list them.
    """

    batch_keys: tuple[str, ...]

    def loss_fn(
        self, params: Any, batch: Batch, rngs: dict[str, Array] | None, totals: Any
    ) -> tuple[Array, Sums]:
        """(the loss to minimise, {metric name: (sum, count)}).

        Args:
          rngs: {"dropout": key, "objective": key}: dropout's key and a key of the objective's
            own for any other randomness it needs (e.g. sampling replacements); None:
            deterministic (evaluation).
          totals: the loss denominators of the whole global batch (`totals_fn`), so that the
            losses of micro-batches add up to exactly the full batch's; None: this batch's own.
        """
        ...

    def totals_fn(self, batch: Batch) -> Any:
        """The loss denominators of a global batch."""
        ...


def step_rngs(seed: int, step: Array) -> dict[str, Array]:
    """The keys of training step `step`: dropout's and the objective's, each from its own
    stream, so that a resumed step repeats both."""
    root = jax.random.key(seed)
    return {
        "dropout": jax.random.fold_in(root, step),
        "objective": jax.random.fold_in(jax.random.fold_in(root, OBJECTIVE_STREAM), step),
    }


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training. The dropout key is derived from the seed and
    the step, so a restored step restores the randomness too."""

    step: Array  # int32 scalar
    params: Any
    opt_state: Any


def _init_fn(model: nn.Module, tx: optax.GradientTransformation, seq_length: int):
    def init(rng: Array) -> TrainState:
        ids = jnp.ones((1, seq_length), jnp.int32)
        params = model.init(rng, ids)["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return init


def state_shardings(
    model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh, seq_length: int
) -> tuple[TrainState, TrainState]:
    """(abstract state, NamedShardings) computed without allocating anything."""
    boxed = jax.eval_shape(_init_fn(model, tx, seq_length), jax.random.key(0))
    shardings = sharding.logical_shardings(boxed, mesh)
    return nn.meta.unbox(boxed), shardings


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    seed: int,
    seq_length: int,
    params: Any | None = None,
    shardings: TrainState | None = None,
) -> TrainState:
    """A fresh state, created directly in its sharded layout.

    Args:
      params: optional initial parameters (e.g. phase 1 of pre-training or an imported
        checkpoint); entries present replace the random initialisation.
      shardings: the state's shardings when the caller has them (`state_shardings`), else
        computed here.
    """
    if shardings is None:
        _, shardings = state_shardings(model, tx, mesh, seq_length)
    init = _init_fn(model, tx, seq_length)

    def init_unboxed(rng, given):
        state = nn.meta.unbox(init(rng))
        if given is None:
            return state
        merged = _merge(state.params, given)
        return state.replace(params=merged, opt_state=tx.init(merged))

    jitted = jax.jit(init_unboxed, out_shardings=shardings)
    return jitted(jax.random.key(seed), params)


def _merge(base: Any, given: Any) -> Any:
    """`base` with every leaf that `given` holds replaced (shapes must agree)."""
    flat_base = flax.traverse_util.flatten_dict(base)
    flat_given = flax.traverse_util.flatten_dict(given)
    for path, value in flat_given.items():
        if path not in flat_base:
            raise UserError(f"initial parameter {'/'.join(path)} does not exist in the model")
        if flat_base[path].shape != value.shape:
            raise UserError(
                f"initial parameter {'/'.join(path)} has shape {value.shape}, "
                f"the model needs {flat_base[path].shape}"
            )
        flat_base[path] = jnp.asarray(value, flat_base[path].dtype)
    return flax.traverse_util.unflatten_dict(flat_base)


def train_step(
    state: TrainState,
    batch: Batch,
    progress: Array | None = None,
    *,
    objective: Objective,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    accumulation_steps: int = 1,
    seed: int = 0,
    timed_steps: int = 0,
) -> tuple[TrainState, Metrics]:
    """One optimizer step on a global batch, with exact gradient accumulation.

    Args:
      progress: with a time budget (bert/training/budget.py), the fraction of it spent when the
        step starts (a float32 scalar); None: the schedule follows the step count.
      objective: the loss (`Objective`); pre-training and every fine-tuning task share this
        step.
      schedule: the learning rate per step. Without `progress`, `tx` holds it too and this is
        the rate reported; with it, `tx`'s own rate is 1 and its update is scaled here by
        schedule(progress * timed_steps): the schedule of a `timed_steps`-step run, at the
        position of the budget's elapsed fraction.
      accumulation_steps: micro-batches per step; gradients summed exactly.
      seed: the step's random keys come from it and the step (`step_rngs`), so a resumed step
        repeats them; micro-batch i folds i into each.

    Returns the new state and metrics as sums with their denominators (`*_sum`, `*_count`),
    plus `loss`, `grad_norm` and `learning_rate` for this step, and `real_tokens` /
    `padded_tokens`: the batch's non-padding tokens and all its token positions (every input
    mask of the batch counted).
    """
    rngs = step_rngs(seed, state.step)
    totals = objective.totals_fn(batch)
    grad_fn = jax.value_and_grad(objective.loss_fn, has_aux=True)
    n = accumulation_steps
    if n == 1:
        (loss, sums), grads = grad_fn(state.params, batch, rngs, totals)
    else:
        # Micro-batch i takes rows i, i+n, i+2n, ...: each stays spread over every device.
        micro = jax.tree.map(lambda x: x.reshape(-1, n, *x.shape[1:]).swapaxes(0, 1), batch)

        def micro_step(i):
            micro_batch = jax.tree.map(lambda x: x[i], micro)
            micro_rngs = {name: jax.random.fold_in(key, i) for name, key in rngs.items()}
            return grad_fn(state.params, micro_batch, micro_rngs, totals)

        def accumulate(carry, i):
            return jax.tree.map(jnp.add, carry, micro_step(i)), None

        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(micro_step, 0))
        ((loss, sums), grads), _ = jax.lax.scan(accumulate, zeros, jnp.arange(n))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if progress is not None:  # a time budget's position, given from outside (a pure input)
        rate = jnp.asarray(schedule(progress * timed_steps), jnp.float32)
        updates = jax.tree.map(lambda u: u * rate.astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optim.global_norm(grads)}
    if progress is None:
        metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
    else:
        metrics["learning_rate"] = rate
    metrics.update(flatten_sums(sums))
    metrics.update(token_counts(batch))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def token_counts(batch: Batch) -> Metrics:
    """{"real_tokens", "padded_tokens"} of a batch, from its input masks (none: no entries)."""
    masks = [batch[k] for k in sorted(batch) if k.endswith("input_mask")]
    if not masks:
        return {}
    real = sum(jnp.sum(m != 0, dtype=jnp.float32) for m in masks)
    return {"real_tokens": real, "padded_tokens": jnp.float32(sum(m.size for m in masks))}


def flatten_sums(sums: Sums) -> Metrics:
    """{name: (sum, count)} -> {name_sum: sum, name_count: count} (what summarize reduces)."""
    metrics = {}
    for name, (total, count) in sums.items():
        metrics[f"{name}_sum"], metrics[f"{name}_count"] = total, count
    return metrics


def eval_step(params: Any, batch: Batch, *, objective: Objective) -> Metrics:
    """Deterministic forward pass: the objective's metric sums and counts."""
    _, sums = objective.loss_fn(params, batch, None, None)
    return flatten_sums(sums)


def compile_train_step(
    objective: Objective,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    state_sharding: TrainState,
    accumulation_steps: int = 1,
    seed: int = 0,
    timed_steps: int = 0,
) -> Callable[..., tuple[TrainState, Metrics]]:
    """train_step jitted with in/out shardings, the state donated.

    Args:
      timed_steps: 0: called as (state, batch), the schedule following the step count; > 0:
        called as (state, batch, progress) under a time budget (`train_step`'s `progress`).
    """
    step = functools.partial(
        train_step,
        objective=objective,
        tx=tx,
        schedule=schedule,
        accumulation_steps=accumulation_steps,
        seed=seed,
        timed_steps=timed_steps,
    )
    inputs = (state_sharding, sharding.batch_shardings(mesh, objective.batch_keys))
    if timed_steps:
        inputs += (sharding.replicated(mesh),)
    return jax.jit(
        step,
        in_shardings=inputs,
        out_shardings=(state_sharding, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )


def compile_eval_step(
    objective: Objective, mesh: Mesh, params_sharding: Any
) -> Callable[[Any, Batch], Metrics]:
    """eval_step jitted with in/out shardings (metrics replicated)."""
    return jax.jit(
        functools.partial(eval_step, objective=objective),
        in_shardings=(params_sharding, sharding.batch_shardings(mesh, objective.batch_keys)),
        out_shardings=sharding.replicated(mesh),
    )


def summarize(metric_list: list[Metrics]) -> dict[str, float]:
    """Host-side reduction of per-step metrics: sums over steps, then ratios.

    Returns every metric the objective sums (its name without `_sum`: the summed numerators
    over the summed denominators), loss and grad_norm (means over the steps), the last
    learning_rate, and real_tokens / padded_tokens summed over the steps.
    """
    fetched = jax.device_get(metric_list)
    out: dict[str, float] = {}
    names = {k[: -len("_sum")] for k in fetched[0] if k.endswith("_sum")}
    for name in sorted(names):
        total = sum(float(m[f"{name}_sum"]) for m in fetched)
        count = sum(float(m[f"{name}_count"]) for m in fetched)
        out[name] = total / max(count, 1.0)
    for name in ("loss", "grad_norm"):
        if name in fetched[0]:
            out[name] = sum(float(m[name]) for m in fetched) / len(fetched)
    for name in ("real_tokens", "padded_tokens"):
        if name in fetched[0]:
            out[name] = sum(float(m[name]) for m in fetched)
    if "learning_rate" in fetched[-1]:
        out["learning_rate"] = float(fetched[-1]["learning_rate"])
    return out
