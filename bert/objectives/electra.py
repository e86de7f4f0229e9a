"""ELECTRA (Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as Discriminators Rather
Than Generators"; the official recipe is google-research/electra's run_pretraining.py): a small
generator learns the masked LM on the pipeline's masked rows (packed, as objective mlm), tokens
sampled from its softmax at the masked positions replace them, and the discriminator (the main
encoder, under "bert") learns to tell, token by token, which were replaced.

The loss is generator_weight x the generator's mean MLM cross-entropy over the masked tokens +
discriminator_weight x the discriminator's mean binary cross-entropy over the real (non-padding)
tokens. A sampled token equal to the original counts as original; no gradient flows through the
sampling. Generator and discriminator share the embeddings (bert/heads.py `Electra`). The
settings are the config's `electra` section (`Options`, configs/electra.py).
"""

import dataclasses
import math
from collections.abc import Mapping, Set
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from bert import flops, losses
from bert.heads import Electra as ElectraModel
from bert.heads import generator_config
from bert.model import BertConfig
from bert.objectives.mlm import POSITION_KEY, Mlm
from util.errors import UserError

Array = jax.Array
Batch = dict[str, Array]
Sums = dict[str, tuple[Array, Array]]

# Held-out batches sample their replacements from this seed and the batch's ids, so that every
# evaluation of the same batches corrupts them alike.
EVAL_SEED = 0


@dataclasses.dataclass(frozen=True)
class Options:
    """The objective's settings, each from the config's `electra` section.

    Attributes:
      generator_size: the generator's width as a fraction of the discriminator's, in (0, 1].
      generator_weight: the weight of the generator's MLM loss, above 0.
      discriminator_weight: the weight of the replaced-token detection loss, above 0.
      temperature: replacements are sampled from softmax(logits / temperature), above 0.
      disallow_correct: never sample the original token (every masked token is replaced).
    """

    generator_size: float
    generator_weight: float
    discriminator_weight: float
    temperature: float
    disallow_correct: bool

    @classmethod
    def from_dict(cls, given: Mapping[str, Any], section: str = "config.electra") -> "Options":
        """The options in `given` (a config section as a dict), each checked.

        Raises:
          UserError: an unknown or missing option, or a value out of its range, naming it.
        """
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise UserError(
                f"{section}.{unknown[0]} is not an ELECTRA option; known: {', '.join(known)}"
            )
        missing = [name for name in known if name not in given]
        if missing:
            raise UserError(f"{section} lacks {', '.join(missing)} (configs/electra.py sets them)")
        for name in known[:-1]:
            value = given[name]
            if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
                raise UserError(f"{section}.{name}={value!r} must be a number above 0")
        if given["generator_size"] > 1:
            raise UserError(
                f"{section}.generator_size={given['generator_size']!r} must be in (0, 1]: the "
                "generator's width as a fraction of the discriminator's"
            )
        if type(given["disallow_correct"]) is not bool:
            raise UserError(f"{section}.disallow_correct must be true or false")
        return cls(**{name: given[name] for name in known})


def sample(key: Array, logits: Array, originals: Array, options: Options) -> Array:
    """Replacement token ids [batch, predictions] drawn from the generator's `logits` [batch,
    predictions, vocab] (no gradient), at options.temperature; with options.disallow_correct
    never `originals` [batch, predictions]."""
    logits = jax.lax.stop_gradient(logits.astype(jnp.float32)) / options.temperature
    if options.disallow_correct:
        logits = jnp.where(jax.nn.one_hot(originals, logits.shape[-1]) > 0, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)


def corrupt(batch: Batch, sampled: Array) -> tuple[Array, Array]:
    """The discriminator's input and labels: the batch's tokens with each real prediction's
    position holding its sampled token (`sampled` [batch, predictions]), and per token whether
    it was replaced (sampled != the original). Both [batch, length]; padding predictions
    (weight 0) change nothing."""
    ids = jnp.asarray(batch["input_ids"])
    rows = jnp.arange(ids.shape[0])[:, None]  # [batch, 1]
    # a padding prediction points past the row: dropped by the scatter
    positions = jnp.where(batch["masked_lm_weights"] > 0, batch["masked_lm_positions"],
                          ids.shape[1])  # fmt: skip
    corrupted = ids.at[rows, positions].set(sampled.astype(ids.dtype), mode="drop")
    differs = sampled != batch["masked_lm_ids"]  # [batch, predictions]
    replaced = jnp.zeros(ids.shape, jnp.bool_).at[rows, positions].set(differs, mode="drop")
    return corrupted, replaced


def detection_sums(logits: Array, replaced: Array, input_mask: Array) -> Sums:
    """The discriminator's loss and metrics over the real tokens, as (sum, count) pairs: binary
    cross-entropy, accuracy, the precision and recall of "replaced", and the share replaced
    (what predicting "original" everywhere gets as its accuracy's complement)."""
    real = input_mask > 0
    bce = optax.sigmoid_binary_cross_entropy(
        logits.astype(jnp.float32), replaced.astype(jnp.float32)
    )
    predicted = logits > 0
    hits = jnp.sum(predicted & replaced & real, dtype=jnp.float32)
    tokens = jnp.sum(real, dtype=jnp.float32)
    return {
        "disc_loss": (jnp.sum(jnp.where(real, bce, 0.0)), tokens),
        "disc_accuracy": (jnp.sum((predicted == replaced) & real, dtype=jnp.float32), tokens),
        "replaced_precision": (hits, jnp.sum(predicted & real, dtype=jnp.float32)),
        "replaced_recall": (hits, jnp.sum(replaced & real, dtype=jnp.float32)),
        "replaced_share": (jnp.sum(replaced & real, dtype=jnp.float32), tokens),
    }


@dataclasses.dataclass(frozen=True)
class Electra(Mlm):
    """ELECTRA's objective (the class attributes and `documents` as `Mlm`'s).

    Attributes:
      options: the config's `electra` section, checked (`Options`).
    """

    options: Options | None = None  # always given (create)
    name: ClassVar[str] = "electra"
    data_mode: ClassVar[str] = "packed"
    heads: ClassVar[tuple[str, ...]] = ("discriminator", "generator", "generator_mlm")

    @classmethod
    def create(
        cls,
        config: BertConfig,
        present: Set[str] | None = None,
        documents: bool = False,
        options: Options | None = None,
    ) -> "Electra":
        """The objective with its `options` (objectives.create reads them from the config);
        `present`: a checkpoint's parameter groups, which must hold the generator's.

        Raises:
          UserError: no options; a generator that does not split into heads; a checkpoint
            without the generator.
        """
        if options is None:
            raise UserError("objective electra needs its config.electra section "
                            "(configs/electra.py)")  # fmt: skip
        lacking = sorted(set(cls.heads) - set(present)) if present is not None else []
        if lacking:
            raise UserError(f"the checkpoint has no ELECTRA {', '.join(lacking)} parameters")
        objective = cls(config, documents, options)
        objective.generator_config  # noqa: B018 (checked now, not inside the first step)
        return objective

    @property
    def generator_config(self) -> BertConfig:
        try:
            return generator_config(self.config, self.options.generator_size)
        except ValueError as e:
            raise UserError(
                f"config.electra.generator_size={self.options.generator_size}: {e}"
            ) from None

    @property
    def model(self) -> ElectraModel:
        return ElectraModel(self.config, self.generator_config)

    def outputs(self, params: Any, batch: Batch, rngs: dict[str, Array] | None) -> dict:
        """The generator's MLM logits at the masked positions, the tokens sampled from them,
        the discriminator's input (`corrupted`) and labels (`replaced`) and its logits."""
        model, variables = self.model, {"params": params}
        common = dict(segment_ids=batch["segment_ids"], input_mask=batch["input_mask"],
                      deterministic=rngs is None,
                      position_ids=batch[POSITION_KEY] if self.documents else None)  # fmt: skip
        dropout = [None, None] if rngs is None else jax.random.split(rngs["dropout"])
        mlm_logits = model.apply(
            variables, batch["input_ids"], masked_positions=batch["masked_lm_positions"],
            method="generate", rngs=None if rngs is None else {"dropout": dropout[0]}, **common,
        )  # fmt: skip
        if rngs is None:
            key = jax.random.fold_in(jax.random.key(EVAL_SEED), jnp.sum(batch["input_ids"]))
        else:
            key = rngs["objective"]
        sampled = sample(key, mlm_logits, batch["masked_lm_ids"], self.options)
        corrupted, replaced = corrupt(batch, sampled)
        disc_logits = model.apply(variables, corrupted, method="discriminate",
                                  rngs=None if rngs is None else {"dropout": dropout[1]},
                                  **common)  # fmt: skip
        return {"mlm_logits": mlm_logits, "sampled": sampled, "corrupted": corrupted,
                "replaced": replaced, "disc_logits": disc_logits}  # fmt: skip

    def loss_fn(
        self, params: Any, batch: Batch, rngs: dict[str, Array] | None, totals: Any
    ) -> tuple[Array, Sums]:
        out = self.outputs(params, batch, rngs)
        weights = batch["masked_lm_weights"]
        sums = {
            "mlm_loss": losses.weighted_cross_entropy(out["mlm_logits"], batch["masked_lm_ids"],
                                                      weights),
            "mlm_accuracy": losses.weighted_accuracy(out["mlm_logits"], batch["masked_lm_ids"],
                                                     weights),
            **detection_sums(out["disc_logits"], out["replaced"], batch["input_mask"]),
        }  # fmt: skip
        mlm_total, disc_total = (
            (sums["mlm_loss"][1], sums["disc_loss"][1]) if totals is None else totals
        )
        o = self.options
        loss = o.generator_weight * sums["mlm_loss"][0] / jnp.maximum(mlm_total, 1.0)
        loss += o.discriminator_weight * sums["disc_loss"][0] / jnp.maximum(disc_total, 1.0)
        return loss, sums

    def totals_fn(self, batch: Batch) -> tuple[Array, Array]:
        """The masked predictions and the real tokens of a global batch."""
        return (jnp.sum(batch["masked_lm_weights"].astype(jnp.float32)),
                jnp.sum(batch["input_mask"] > 0, dtype=jnp.float32))  # fmt: skip

    def train_flops(self, seq_length: int, num_predictions: int) -> float:
        """Forward + backward matmul FLOPs of one training sequence: both encoders, their
        embedding projections, the generator's MLM head and the discriminator's head."""
        c, g, e = self.config, self.generator_config, self.config.embedding_width
        forward = flops.encoder_flops(c, seq_length) + flops.encoder_flops(g, seq_length)
        forward += sum(2 * e * m.hidden_size * seq_length for m in (c, g) if m.hidden_size != e)
        forward += 2 * (g.hidden_size * e + e * c.vocab_size) * num_predictions
        forward += 2 * (c.hidden_size * c.hidden_size + c.hidden_size) * seq_length
        return flops.TRAIN_PER_FORWARD * forward
