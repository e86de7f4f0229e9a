"""BERT's pre-training objective: masked LM + next sentence prediction, on the pipeline's
sentence pairs (segment B follows A, or comes from another document; `config.data`'s
`short_seq_prob` and `nsp_random_prob`). The loss is the mean MLM cross-entropy over the masked
tokens plus the mean NSP cross-entropy over the pairs, as the original BERT."""

import dataclasses
from collections.abc import Set
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from bert import flops, losses
from bert.heads import BertForPreTraining
from bert.objectives.mlm import MLM_KEYS, Mlm

Array = jax.Array
Batch = dict[str, Array]
Sums = dict[str, tuple[Array, Array]]


@dataclasses.dataclass(frozen=True)
class MlmNsp(Mlm):
    """MLM + NSP (the class attributes as `Mlm`'s).

    Attributes:
      with_nsp: False to score the MLM alone on the same pairs (a checkpoint without the NSP
        head, evaluated).
    """

    with_nsp: bool = True
    name: ClassVar[str] = "mlm_nsp"
    data_mode: ClassVar[str] = "nsp"
    heads: ClassVar[tuple[str, ...]] = ("mlm", "nsp")
    # next_sentence_labels: int32 [batch], 0: B follows A, 1: B is random
    batch_keys: ClassVar[tuple[str, ...]] = (*MLM_KEYS, "next_sentence_labels")

    @classmethod
    def create(cls, config, present: Set[str] | None = None, documents: bool = False) -> "MlmNsp":
        """The objective; `present`: a checkpoint's parameter groups (no "nsp": MLM alone).
        Sentence pairs are not packed rows: `documents` must be False (objectives.create)."""
        return cls(config, documents, with_nsp=present is None or "nsp" in present)

    @property
    def model(self) -> BertForPreTraining:
        return BertForPreTraining(self.config, with_nsp=self.with_nsp)

    def loss_fn(
        self, params: Any, batch: Batch, rngs: dict[str, Array] | None, totals: Any
    ) -> tuple[Array, Sums]:
        out = self.outputs(params, batch, rngs)
        mlm_total, nsp_total = (None, None) if totals is None else totals
        nsp_labels = batch["next_sentence_labels"] if self.with_nsp else None
        return losses.pretraining_loss(
            out["mlm_logits"], batch["masked_lm_ids"], batch["masked_lm_weights"],
            out.get("nsp_logits"), nsp_labels, mlm_total, nsp_total,
        )  # fmt: skip

    def totals_fn(self, batch: Batch) -> tuple[Array, Array]:
        mlm_total = jnp.sum(batch["masked_lm_weights"].astype(jnp.float32))
        return mlm_total, jnp.float32(batch["input_ids"].shape[0])

    def train_flops(self, seq_length: int, num_predictions: int) -> float:
        nsp = flops.nsp_head_flops(self.config) if self.with_nsp else 0.0
        return super().train_flops(seq_length, num_predictions) + flops.TRAIN_PER_FORWARD * nsp
