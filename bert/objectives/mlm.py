"""Masked language modelling alone: the pipeline's whole sentences packed across documents into
rows (no next-sentence pairs, one segment), a share of their tokens masked
(`config.data.mask_rate`), and the cross-entropy of the masked tokens (RoBERTa, MosaicBERT and
ModernBERT train so). With `documents` (config.data.pack_attention "document") the batch also
holds `position_ids` restarting at each document, and each document's part of a row attends
only to itself (ModernBERT's unpadded sequences)."""

import dataclasses
import math
from collections.abc import Set
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from bert import flops, losses
from bert.heads import BertForPreTraining
from bert.model import BertConfig

Array = jax.Array
Batch = dict[str, Array]
Sums = dict[str, tuple[Array, Array]]

# The masked pre-training batch (input_pipeline/pretraining.py makes it):
# input_ids, segment_ids, input_mask: int32 [batch, length];
# masked_lm_positions, masked_lm_ids: int32 [batch, predictions];
# masked_lm_weights: float32 [batch, predictions] (0 for padding predictions).
MLM_KEYS = ("input_ids", "segment_ids", "input_mask", "masked_lm_positions", "masked_lm_ids",
            "masked_lm_weights")  # fmt: skip
# With documents kept apart: position_ids int32 [batch, length], 0 where each document starts.
POSITION_KEY = "position_ids"
# The largest loss whose perplexity float32 holds (TensorBoard writes scalars as float32).
_LOG_FLOAT32_MAX = math.log(float(jnp.finfo(jnp.float32).max))


@dataclasses.dataclass(frozen=True)
class Mlm:
    """The MLM objective of an encoder of `config`.

    Class attributes (what every objective declares):
      name: its `config.objective` value.
      data_mode: the pipeline's batches it trains on (input_pipeline/instance_stream.py MODES).
      heads: the parameter groups it trains beside the encoder ("bert").
      batch_keys: the keys of its training batch (a property here: with `documents`, also
        position_ids).

    Attributes:
      documents: each document's part of a packed row attends only to itself, its positions
        counted from its own start (the batch's position_ids).
    """

    config: BertConfig
    documents: bool = False
    name: ClassVar[str] = "mlm"
    data_mode: ClassVar[str] = "packed"
    heads: ClassVar[tuple[str, ...]] = ("mlm",)

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return (*MLM_KEYS, POSITION_KEY) if self.documents else MLM_KEYS

    @classmethod
    def create(
        cls, config: BertConfig, present: Set[str] | None = None, documents: bool = False
    ) -> "Mlm":
        """The objective; `present`: a checkpoint's parameter groups, to score what it has;
        `documents`: packed rows keep their documents apart."""
        del present  # the MLM head is all this objective scores
        return cls(config, documents)

    @property
    def model(self) -> BertForPreTraining:
        """The encoder with the heads this objective trains."""
        return BertForPreTraining(self.config, with_nsp=False)

    def outputs(self, params: Any, batch: Batch, rngs: dict[str, Array] | None) -> dict:
        """The model's outputs, the MLM head run on the masked positions alone."""
        return self.model.apply(
            {"params": params},
            batch["input_ids"],
            batch["segment_ids"],
            batch["input_mask"],
            masked_positions=batch["masked_lm_positions"],
            deterministic=rngs is None,
            position_ids=batch[POSITION_KEY] if self.documents else None,
            rngs=None if rngs is None else {"dropout": rngs["dropout"]},
        )

    def loss_fn(
        self, params: Any, batch: Batch, rngs: dict[str, Array] | None, totals: Any
    ) -> tuple[Array, Sums]:
        out = self.outputs(params, batch, rngs)
        mlm_total = None if totals is None else totals[0]
        return losses.pretraining_loss(
            out["mlm_logits"], batch["masked_lm_ids"], batch["masked_lm_weights"], None, None,
            mlm_total,
        )  # fmt: skip

    def totals_fn(self, batch: Batch) -> tuple[Array, ...]:
        return (jnp.sum(batch["masked_lm_weights"].astype(jnp.float32)),)

    def train_flops(self, seq_length: int, num_predictions: int) -> float:
        """Forward + backward matmul FLOPs of one training sequence (bert/flops.py)."""
        forward = flops.encoder_flops(self.config, seq_length)
        forward += flops.mlm_head_flops(self.config, num_predictions)
        return flops.TRAIN_PER_FORWARD * forward

    def eval_metrics(self, results: dict[str, float]) -> dict[str, float]:
        """Held-out results with what follows from them: the MLM perplexity."""
        loss = results["mlm_loss"]  # beyond float32's range (TensorBoard's scalars): inf
        perplexity = math.exp(loss) if loss < _LOG_FLOAT32_MAX else math.inf
        return {**results, "mlm_perplexity": perplexity}
