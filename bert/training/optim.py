"""Optimizers (LAMB and AdamW as BERT defines them), the learning-rate schedule, and the mask of
the parameters they decay and adapt.

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
import optax
from flax import traverse_util

from util.errors import UserError

OPTIMIZERS = ("lamb", "adamw")


def learning_rate_schedule(
    peak: float, warmup_steps: int, total_steps: int, end: float = 0.0, power: float = 1.0
) -> optax.Schedule:
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then polynomial decay to `end` at
    `total_steps` (power 1 is BERT's linear decay; NVIDIA's LAMB recipe uses 0.5)."""
    if total_steps <= 0:
        raise UserError(f"train.steps must be positive, got {total_steps}")
    for name, value in (("learning_rate", peak), ("end_learning_rate", end)):
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"train.{name} must be a finite number >= 0, got {value}")
    if not 0 <= warmup_steps <= total_steps:
        raise UserError(f"train.warmup_steps ({warmup_steps}) must be in [0, {total_steps}]")
    decay = optax.polynomial_schedule(peak, end, power, max(total_steps - warmup_steps, 1))
    if warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


def matrices_mask(params: Any) -> Any:
    """True for weight matrices and embeddings, the parameters BERT's optimizers decay and LAMB
    adapts; False for biases and LayerNorm parameters."""
    flat = traverse_util.flatten_dict(params)
    mask = {path: path[-1] not in ("bias", "scale", "output_bias") for path in flat}
    return traverse_util.unflatten_dict(mask)


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
            optax.masked(optax.scale_by_trust_ratio(), matrices_mask),
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
