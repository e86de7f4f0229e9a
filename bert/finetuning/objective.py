"""The fine-tuning objective: a head model's loss over named inputs (single texts, pairs, or a
bi-encoder's several sides), in the shape the generic train step takes (bert/training/step.py's
Objective)."""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert import losses

Array = jax.Array
Batch = dict[str, Array]
Sums = dict[str, tuple[Array, Array]]


@dataclasses.dataclass(frozen=True)
class Finetuning:
    """A head model's loss over named inputs.

    Attributes:
      model: called as model(*inputs in input_keys order, **keyword inputs, deterministic=...).
      loss: (outputs, batch) -> {name: (sum, count)} with a "loss" entry (bert/losses.py).
      input_keys: the batch keys the model takes, in order.
      label_keys: the batch keys holding labels; the first one counts the loss's denominator.
      keyword_keys: more batch keys the model takes, by their names (packed rows'
        "position_ids").
    """

    model: nn.Module
    loss: Callable[[Any, Batch], Sums]
    input_keys: tuple[str, ...]
    label_keys: tuple[str, ...]
    keyword_keys: tuple[str, ...] = ()

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return self.input_keys + self.keyword_keys + self.label_keys

    def loss_fn(
        self, params: Any, batch: Batch, rngs: dict[str, Array] | None, total: Any
    ) -> tuple[Array, Sums]:
        outputs = self.model.apply(
            {"params": params},
            *(batch[k] for k in self.input_keys),
            **{k: batch[k] for k in self.keyword_keys},
            deterministic=rngs is None,
            rngs=None if rngs is None else {"dropout": rngs["dropout"]},
        )
        sums = self.loss(outputs, batch)
        loss_sum, count = sums["loss"]
        return loss_sum / jnp.maximum(count if total is None else total, 1.0), sums

    def totals_fn(self, batch: Batch) -> Array:
        return losses.label_count(batch[self.label_keys[0]])
