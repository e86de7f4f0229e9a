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
from bert.finetuning import gradcache

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
      mini_batches: >0: the model's outputs and their gradient computed in this many
        mini-batches (gradcache.py: the loss still over the whole batch); 0: in one pass.
    """

    model: nn.Module
    loss: Callable[[Any, Batch], Sums]
    input_keys: tuple[str, ...]
    label_keys: tuple[str, ...]
    keyword_keys: tuple[str, ...] = ()
    mini_batches: int = 0

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return self.input_keys + self.keyword_keys + self.label_keys

    def loss_fn(
        self, params: Any, batch: Batch, rngs: dict[str, Array] | None, total: Any
    ) -> tuple[Array, Sums]:
        keywords = {k: batch[k] for k in self.keyword_keys}

        def apply(p: Any, inputs: tuple[Array, ...], key: Array | None) -> Any:
            return self.model.apply({"params": p}, *inputs, **keywords, deterministic=key is None,
                                    rngs=None if key is None else {"dropout": key})  # fmt: skip

        inputs = tuple(batch[k] for k in self.input_keys)
        key = None if rngs is None else rngs["dropout"]
        if self.mini_batches:
            outputs = gradcache.cached_apply(apply, params, inputs, key, self.mini_batches)
        else:
            outputs = apply(params, inputs, key)
        sums = self.loss(outputs, batch)
        loss_sum, count = sums["loss"]
        return loss_sum / jnp.maximum(count if total is None else total, 1.0), sums

    def totals_fn(self, batch: Batch) -> Array:
        return losses.label_count(batch[self.label_keys[0]])
