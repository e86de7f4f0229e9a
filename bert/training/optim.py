"""Optimizers (LAMB and AdamW as BERT defines them), the learning-rate schedules (BERT's warm-up and
polynomial decay; warmup-stable-decay), and the mask of the parameters they decay and adapt.

LAMB here is the one BERT is pre-trained with (NVIDIA's FusedLAMB, TF Model Garden's LAMB with
`exclude_from_layer_adaptation`, timm's `Lamb(always_adapt=False)`): Adam moments with bias
correction, epsilon added to the square root of the corrected second moment, decoupled weight
decay added to the update, then the layer-wise trust ratio ||w|| / ||update|| (1 where either
norm is 0), all on weight matrices and embeddings only: biases and LayerNorm parameters get the
plain Adam update, neither decayed nor adapted. (`optax.lamb`'s mask covers only the decay: its
trust ratio scales every parameter, so a bias that starts at zero could only grow by a factor
(1 + learning rate) per step.) Gradients are clipped to a global norm before any of this.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from bert.model import STACKED_LAYERS
from util.errors import UserError

OPTIMIZERS = ("lamb", "adamw")
SCHEDULES = ("linear", "wsd")  # train.schedule: warm-up then polynomial decay; warmup-stable-decay
DECAY_SHAPES = ("linear", "1-sqrt")  # train.decay_shape: a wsd schedule's final decay
# The optimizer's own learning rate under a time budget: the train step scales the update by the
# schedule at the budget's elapsed fraction instead (bert/training/step.py). A schedule, not a
# number, so that the optimizer state has the same structure with and without a budget.
UNIT_RATE: optax.Schedule = optax.constant_schedule(1.0)


def learning_rate_schedule(
    peak: float,
    warmup_steps: int,
    total_steps: int,
    end: float = 0.0,
    power: float = 1.0,
    kind: str = "linear",
    decay_proportion: float = 0.0,
    decay_shape: str = "linear",
) -> optax.Schedule:
    """The learning rate per step: linear warm-up from 0 to `peak` over `warmup_steps`, then

    * kind "linear": polynomial decay to `end` at `total_steps` (power 1 is BERT's linear decay;
      NVIDIA's LAMB recipe uses 0.5);
    * kind "wsd" (warmup-stable-decay, the trapezoid of ModernBERT and MiniCPM): `peak` held
      until the last `decay_proportion` of the steps, which decay to `end` as `decay_shape`
      says: "linear", or "1-sqrt" (peak - (peak - end) * sqrt(t), t the fraction of the decay
      gone; Hagele et al. 2024).

    Raises:
      UserError: a value out of range, named by its train.* field.
    """
    if total_steps <= 0:
        raise UserError(f"train.steps must be positive, got {total_steps}")
    for name, value in (("learning_rate", peak), ("end_learning_rate", end)):
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"train.{name} must be a finite number >= 0, got {value}")
    if not 0 <= warmup_steps <= total_steps:
        raise UserError(f"train.warmup_steps ({warmup_steps}) must be in [0, {total_steps}]")
    if kind not in SCHEDULES:
        raise UserError(f"train.schedule {kind!r} is not one of {', '.join(SCHEDULES)}")
    if not (math.isfinite(decay_proportion) and 0 <= decay_proportion <= 1):
        raise UserError(f"train.decay_proportion must be in [0, 1], got {decay_proportion}")
    if decay_shape not in DECAY_SHAPES:
        raise UserError(
            f"train.decay_shape {decay_shape!r} is not one of {', '.join(DECAY_SHAPES)}"
        )
    if kind == "wsd":
        stable_then_decay = _stable_then_decay(
            peak, end, warmup_steps, total_steps, decay_proportion, decay_shape
        )
        return _after_warmup(peak, warmup_steps, stable_then_decay)
    decay = optax.polynomial_schedule(peak, end, power, max(total_steps - warmup_steps, 1))
    return _after_warmup(peak, warmup_steps, decay)


def _after_warmup(peak: float, warmup_steps: int, rest: optax.Schedule) -> optax.Schedule:
    """Linear warm-up from 0 to `peak`, then `rest` counted from the warm-up's end."""
    if warmup_steps == 0:
        return rest
    warmup = optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.join_schedules([warmup, rest], [warmup_steps])


def _stable_then_decay(
    peak: float, end: float, warmup_steps: int, total_steps: int, proportion: float, shape: str
) -> optax.Schedule:
    """`peak` until the decay's first step, then the decay to `end` at `total_steps`; counted
    from the warm-up's end."""
    decay_steps = round(proportion * total_steps)
    if warmup_steps + decay_steps > total_steps:
        raise UserError(
            f"train.decay_proportion ({proportion}) leaves {total_steps - decay_steps} steps "
            f"before the decay, fewer than the {warmup_steps} warm-up steps"
        )
    stable_steps = total_steps - warmup_steps - decay_steps

    def schedule(count):
        t = jnp.clip((count - stable_steps) / max(decay_steps, 1), 0.0, 1.0)  # decay gone
        gone = jnp.sqrt(t) if shape == "1-sqrt" else t
        return peak - (peak - end) * gone

    return schedule


def matrices_mask(params: Any) -> Any:
    """True for weight matrices and embeddings, the parameters BERT's optimizers decay and LAMB
    adapts; False for biases and LayerNorm parameters."""
    flat = traverse_util.flatten_dict(params)
    mask = {path: path[-1] not in ("bias", "scale", "output_bias") for path in flat}
    return traverse_util.unflatten_dict(mask)


def trust_ratio_per_layer() -> optax.GradientTransformation:
    """`optax.scale_by_trust_ratio` (||w|| / ||update||, 1 where either is 0), with scanned
    layers' parameters (bert/model.py's `STACKED_LAYERS` subtree, the layer on the leading axis)
    scaled layer by layer, each by its own layer's ratio, as when the layers are unrolled."""
    whole = optax.scale_by_trust_ratio()

    def one(update: jax.Array, param: jax.Array) -> jax.Array:
        return whole.update(update, optax.EmptyState(), param)[0]

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("the trust ratio needs the parameters")

        def scale(path, update, param):
            stacked = any(getattr(key, "key", None) == STACKED_LAYERS for key in path)
            return (jax.vmap(one) if stacked else one)(update, param)

        return jax.tree_util.tree_map_with_path(scale, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def make_optimizer(
    name: str,
    schedule: optax.Schedule,
    weight_decay: float,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """Global-norm clipping followed by LAMB or AdamW (see the module doc).

    Args:
      name: "lamb" or "adamw".
      schedule: learning rate per step.
      weight_decay: decoupled weight decay coefficient (0.01 in BERT).
      b1, b2, eps: Adam moments.
      clip_norm: maximum global gradient norm; None or 0 disables clipping.
    """
    if name == "lamb":
        opt = optax.chain(
            optax.scale_by_adam(b1, b2, eps),
            optax.add_decayed_weights(weight_decay, matrices_mask),
            optax.masked(trust_ratio_per_layer(), matrices_mask),
            optax.scale_by_learning_rate(schedule),
        )
    elif name == "adamw":
        opt = optax.adamw(schedule, b1, b2, eps, weight_decay=weight_decay, mask=matrices_mask)
    else:
        raise UserError(f"train.optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    if clip_norm:
        return optax.chain(optax.clip_by_global_norm(clip_norm), opt)
    return opt


def global_norm(tree: Any) -> jax.Array:
    return optax.global_norm(tree)
