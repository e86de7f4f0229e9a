"""What a train step minimises: the pre-training objective (masked LM + next sentence
prediction over the pipeline's batch) and the fine-tuning objective (a head's loss over any
named inputs: single texts, pairs, or a bi-encoder's several sides).

An `Objective` is what bert/training/step.py needs and nothing more: the loss as a pure
function of (params, batch, dropout key, loss denominators), the denominators of a whole global
batch (so that gradient accumulation is exact), and the batch keys it reads.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert import losses
from input_pipeline.batches import BATCH_KEYS

Array = jax.Array
Batch = dict[str, Array]
Sums = dict[str, tuple[Array, Array]]

# loss_fn(params, batch, rng, totals) -> (loss, {name: (sum, count)}); rng None: deterministic.
# `totals` are the loss denominators of the whole global batch, from totals_fn(batch) (None:
# this batch's own counts), so that micro-batch losses add up to exactly the full batch's loss.
LossFn = Callable[[Any, Batch, Array | None, Any], tuple[Array, Sums]]
TotalsFn = Callable[[Batch], Any]


@dataclasses.dataclass(frozen=True)
class Objective:
    """A loss for the generic train step.

    Attributes:
      loss_fn: see LossFn.
      totals_fn: the loss denominators of a global batch.
      batch_keys: the keys of a training batch (inputs and labels).
    """

    loss_fn: LossFn
    totals_fn: TotalsFn
    batch_keys: tuple[str, ...]


def pretraining(model: nn.Module, use_nsp: bool = True) -> Objective:
    """BERT's pre-training loss for a `BertForPreTraining` over the pipeline's BATCH_KEYS.

    Args:
      use_nsp: add the next-sentence loss (False for MLM-only packed batches).
    """

    def loss_fn(params: Any, batch: Batch, rng: Array | None, totals: Any) -> tuple[Array, Sums]:
        out = model.apply(
            {"params": params},
            batch["input_ids"],
            batch["segment_ids"],
            batch["input_mask"],
            masked_positions=batch["masked_lm_positions"],
            deterministic=rng is None,
            rngs=None if rng is None else {"dropout": rng},
        )
        mlm_total, nsp_total = (None, None) if totals is None else totals
        return losses.pretraining_loss(
            out["mlm_logits"],
            batch["masked_lm_ids"],
            batch["masked_lm_weights"],
            out["nsp_logits"] if use_nsp else None,
            batch["next_sentence_labels"] if use_nsp else None,
            mlm_total,
            nsp_total,
        )

    def totals_fn(batch: Batch) -> tuple[Array, Array]:
        mlm_total = jnp.sum(batch["masked_lm_weights"].astype(jnp.float32))
        return mlm_total, jnp.float32(batch["input_ids"].shape[0])

    return Objective(loss_fn, totals_fn, BATCH_KEYS)


def finetuning(
    model: nn.Module,
    loss: Callable[[Any, Batch], Sums],
    input_keys: tuple[str, ...],
    label_keys: tuple[str, ...],
    keyword_keys: tuple[str, ...] = (),
) -> Objective:
    """A head model's loss over named inputs.

    Args:
      model: called as model(*inputs in input_keys order, deterministic=...).
      loss: (outputs, batch) -> {name: (sum, count)} with a "loss" entry (bert/losses.py).
      input_keys: the batch keys the model takes, in order.
      label_keys: the batch keys holding labels; the first one counts the loss's denominator.
      keyword_keys: more batch keys the model takes, by their names (packed rows'
        "position_ids").
    """

    def loss_fn(params: Any, batch: Batch, rng: Array | None, total: Any) -> tuple[Array, Sums]:
        outputs = model.apply(
            {"params": params},
            *(batch[k] for k in input_keys),
            **{k: batch[k] for k in keyword_keys},
            deterministic=rng is None,
            rngs=None if rng is None else {"dropout": rng},
        )
        sums = loss(outputs, batch)
        loss_sum, count = sums["loss"]
        return loss_sum / jnp.maximum(count if total is None else total, 1.0), sums

    def totals_fn(batch: Batch) -> Array:
        return losses.label_count(batch[label_keys[0]])

    return Objective(loss_fn, totals_fn, input_keys + keyword_keys + label_keys)
