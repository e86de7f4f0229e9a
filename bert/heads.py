"""Task heads on top of the encoder, and the models that combine them with it.

Logits are always float32, whatever the compute dtype. The task models (sequence and token
classification, question answering) have BERT's heads by default; with
`config.prediction_head` they have ModernBERT's, as transformers 4.57 defines them: no tanh
pooler, but dense, activation and norm (`PredictionHead`, named `head`) before the classifier.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert.dropout import Dropout
from bert.model import ACTIVATIONS, BertConfig, BertModel, dense, layer_norm

Array = jax.Array


# What a sequence classifier with ModernBERT's head takes (config.classifier_pooling): the
# first token's state, or the mean over the real tokens.
CLASSIFIER_POOLINGS = ("cls", "mean")


def gather_positions(x: Array, positions: Array) -> Array:
    """Picks `positions` [batch, predictions] out of `x` [batch, length, embed]."""
    return jnp.take_along_axis(x, positions[..., None].astype(jnp.int32), axis=1)


def transform(config: BertConfig, x: Array, width: int | None = None) -> Array:
    """Dense (bias: config.head_bias) -> activation -> LayerNorm, as parameters `transform` and
    `transform_norm` of the calling module: [..., embed] -> [..., width] float32 (width None:
    config.hidden_size)."""
    c = config
    width = width or c.hidden_size
    x = dense(c, width, ("embed", "embed_out"), "transform", use_bias=c.head_bias)(x)
    return layer_norm(c, "transform_norm")(ACTIVATIONS[c.hidden_act](x))


class PredictionHead(nn.Module):
    """ModernBERT's head before a task's classifier (transformers' ModernBertPredictionHead and
    the dropout after it): `transform`, then dropout at config.classifier_dropout."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        """x [..., embed] -> [..., embed] float32."""
        x = transform(self.config, x)
        return Dropout(self.config.classifier_dropout)(x, deterministic=deterministic)


class MaskedLMHead(nn.Module):
    """Dense + activation + LayerNorm, then the tied word-embedding matrix and its own bias. The
    transform maps the hidden states to the embeddings' width (config.embedding_width: ELECTRA's
    generator's, as transformers' ElectraGeneratorPredictions)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, embedding_table: Array) -> Array:
        """Args: x [batch, predictions, embed]; embedding_table [vocab, embed].

        Returns: logits [batch, predictions, vocab] in float32.
        """
        c = self.config
        x = transform(c, x, c.embedding_width)
        logits = jnp.einsum(
            "bpe,ve->bpv",
            x.astype(c.dtype),
            embedding_table.astype(c.dtype),
            preferred_element_type=jnp.float32,
        )
        if not c.decoder_bias:
            return logits
        bias = self.param(
            "output_bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
            (c.vocab_size,),
            c.param_dtype,
        )
        return logits + bias.astype(jnp.float32)


class BertForPreTraining(nn.Module):
    """Encoder + masked LM head + next-sentence head (`with_nsp` False: no next-sentence head).

    With `masked_positions` [batch, predictions] the MLM head runs on those positions only
    (the large saving in a training step); without it, on every position. `position_ids`: as
    BertModel takes them (packed sequences, each attending to itself).
    Returns a dict with `mlm_logits`, `nsp_logits` (with the head), `sequence_output`,
    `pooled_output` (with the pooler).
    """

    config: BertConfig
    with_nsp: bool = True
    with_pooler: bool = True  # False (and no NSP head): masked-LM checkpoints without a pooler

    def setup(self):
        self.bert = BertModel(self.config)
        self.mlm = MaskedLMHead(self.config)
        if self.with_nsp:
            self.nsp = dense(self.config, 2, ("embed_out", "classes"), "nsp", dtype=jnp.float32)

    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        input_mask: Array | None = None,
        masked_positions: Array | None = None,
        deterministic: bool = True,
        position_ids: Array | None = None,
    ) -> dict[str, Array]:
        pool = self.with_pooler or self.with_nsp
        seq, pooled = self.bert(input_ids, segment_ids, input_mask, deterministic, position_ids,
                                pool=pool)  # fmt: skip
        picked = seq if masked_positions is None else gather_positions(seq, masked_positions)
        out = {"mlm_logits": self.mlm(picked, self.bert.word_embedding_table()),
               "sequence_output": seq}  # fmt: skip
        if pool:
            out["pooled_output"] = pooled
        if self.with_nsp:
            out["nsp_logits"] = self.nsp(pooled)
        return out


def generator_config(config: BertConfig, fraction: float) -> BertConfig:
    """ELECTRA's generator beside a discriminator of `config`: `fraction` of its width (hidden and
    feed-forward sizes, rounded; heads of the discriminator's dimension, at least one, as the
    official code's max(1, hidden // 64) for heads of 64), all its layers, reading the
    discriminator's embeddings (their width).

    Raises:
      ValueError: the generator's width is not a multiple of its heads.
    """
    hidden = max(1, round(config.hidden_size * fraction))
    heads = max(1, hidden // config.head_dim)
    if hidden % heads:
        raise ValueError(
            f"a generator {hidden} wide (the fraction {fraction} of {config.hidden_size}) does "
            f"not split into {heads} heads of {config.head_dim}"
        )
    intermediate = max(1, round(config.intermediate_size * fraction))
    return dataclasses.replace(config, hidden_size=hidden, num_heads=heads,
                               intermediate_size=intermediate,
                               embedding_size=config.embedding_width)  # fmt: skip


class DiscriminatorHead(nn.Module):
    """ELECTRA's replaced-token detection head (transformers' ElectraDiscriminatorPredictions):
    dense, activation, dense to one logit per token."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x [batch, length, embed] -> logits [batch, length] float32 (above 0: replaced)."""
        c = self.config
        x = ACTIVATIONS[c.hidden_act](dense(c, c.hidden_size, ("embed", "embed_out"), "dense")(x))
        return dense(c, 1, ("embed_out", "classes"), "dense_prediction", jnp.float32)(x)[..., 0]


class Electra(nn.Module):
    """ELECTRA's generator and discriminator (Clark et al. 2020) sharing one embedding module:
    the word, position and token-type tables and their LayerNorm, as the official code ties them.

    Parameter groups: `bert` (the discriminator's encoder with the embeddings: what fine-tuning
    and export read), `discriminator` (its head), `generator` (the generator's layers and its
    embedding projection, no embeddings of its own) and `generator_mlm` (its MLM head, whose
    output layer is the shared word table). Calling it runs both on the same input (what init
    builds the parameters with); a training step calls `generate`, then `discriminate`.
    """

    config: BertConfig  # the discriminator's
    generator_config: BertConfig  # generator_config(config, fraction)

    def setup(self):
        self.bert = BertModel(self.config)
        self.discriminator = DiscriminatorHead(self.config)
        self.generator = BertModel(self.generator_config)
        self.generator_mlm = MaskedLMHead(self.generator_config)

    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        input_mask: Array | None = None,
        masked_positions: Array | None = None,
        deterministic: bool = True,
        position_ids: Array | None = None,
    ) -> dict:
        """{"mlm_logits": generate(...), "disc_logits": discriminate(...)} of one input."""
        inputs = (input_ids, segment_ids, input_mask)
        return {
            "mlm_logits": self.generate(*inputs, masked_positions, deterministic, position_ids),
            "disc_logits": self.discriminate(*inputs, deterministic, position_ids),
        }

    def generate(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        input_mask: Array | None = None,
        masked_positions: Array | None = None,
        deterministic: bool = True,
        position_ids: Array | None = None,
    ) -> Array:
        """The generator's MLM logits [batch, predictions, vocab] float32 at `masked_positions`
        [batch, predictions] (None: at every position); the inputs as BertModel takes them."""
        if segment_ids is None:
            segment_ids = jnp.zeros_like(input_ids)
        positions = position_ids
        if positions is None:
            positions = jnp.arange(input_ids.shape[-1])[None, :]  # [1, length]
        embedded = self.bert.embeddings(input_ids, segment_ids, positions, deterministic)
        seq, _ = self.generator(input_ids, segment_ids, input_mask, deterministic, position_ids,
                                pool=False, embedded=embedded)  # fmt: skip
        picked = seq if masked_positions is None else gather_positions(seq, masked_positions)
        return self.generator_mlm(picked, self.bert.word_embedding_table())

    def discriminate(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        input_mask: Array | None = None,
        deterministic: bool = True,
        position_ids: Array | None = None,
    ) -> Array:
        """The discriminator's logits [batch, length] float32: above 0, the token was replaced."""
        seq, _ = self.bert(input_ids, segment_ids, input_mask, deterministic, position_ids,
                           pool=False)  # fmt: skip
        return self.discriminator(seq)


def classifier_pooling(config: BertConfig) -> str:
    """config.classifier_pooling, checked (ValueError naming the field)."""
    if config.classifier_pooling not in CLASSIFIER_POOLINGS:
        raise ValueError(
            f"model.classifier_pooling {config.classifier_pooling!r} is not one of "
            f"{', '.join(CLASSIFIER_POOLINGS)}"
        )
    return config.classifier_pooling


class BertForSequenceClassification(nn.Module):
    """Pooled [CLS] -> dropout -> Dense(num_labels). num_labels=1 is regression (STS-B).

    With config.prediction_head (ModernBERT's ModernBertForSequenceClassification): the first
    token's state or the mean over the real tokens (config.classifier_pooling) ->
    PredictionHead -> Dense(num_labels); the encoder then has no pooler.
    """

    config: BertConfig
    num_labels: int

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        input_mask: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        encoder = BertModel(self.config, name="bert")
        if self.config.prediction_head:
            pooling = classifier_pooling(self.config)
            seq, _ = encoder(input_ids, segment_ids, input_mask, deterministic, pool=False)
            mask = jnp.ones_like(input_ids) if input_mask is None else input_mask
            pooled = pool_rows(seq.astype(jnp.float32), mask, pooling)  # [batch, embed]
            pooled = PredictionHead(self.config, name="head")(pooled, deterministic)
        else:
            _, pooled = encoder(input_ids, segment_ids, input_mask, deterministic)
            pooled = Dropout(self.config.hidden_dropout)(pooled, deterministic=deterministic)
        return dense(
            self.config, self.num_labels, ("embed_out", "classes"), "classifier", jnp.float32
        )(pooled)  # [batch, num_labels]


def _token_states(
    config: BertConfig,
    input_ids: Array,
    segment_ids: Array | None,
    input_mask: Array | None,
    deterministic: bool,
    position_ids: Array | None = None,
) -> Array:
    """Every token's state for a per-token head, made in the calling module (submodules `bert`
    and, with config.prediction_head, `head`): BERT's hidden states after dropout, or
    ModernBERT's through PredictionHead. Returns [batch, length, embed]."""
    c = config
    if not c.prediction_head:
        seq, _ = BertModel(c, name="bert")(
            input_ids, segment_ids, input_mask, deterministic, position_ids
        )
        return Dropout(c.hidden_dropout)(seq, deterministic=deterministic)
    seq, _ = BertModel(c, name="bert")(
        input_ids, segment_ids, input_mask, deterministic, position_ids, pool=False
    )
    return PredictionHead(c, name="head")(seq, deterministic)


class BertForTokenClassification(nn.Module):
    """Every token's hidden state -> dropout -> Dense(num_labels) (NER tagging); with
    config.prediction_head (ModernBertForTokenClassification): -> PredictionHead ->
    Dense(num_labels).

    Takes packed rows too (`position_ids`, see BertModel): each token's logits are then those
    of its own sequence alone.
    """

    config: BertConfig
    num_labels: int

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        input_mask: Array | None = None,
        deterministic: bool = True,
        position_ids: Array | None = None,
    ) -> Array:
        seq = _token_states(self.config, input_ids, segment_ids, input_mask, deterministic,
                            position_ids)  # fmt: skip
        return dense(self.config, self.num_labels, ("embed", "classes"), "classifier", jnp.float32)(
            seq
        )  # [batch, length, num_labels]


class BertForQuestionAnswering(nn.Module):
    """Span extraction: every token's hidden state -> (start, end) logits; with
    config.prediction_head (ModernBertForQuestionAnswering, whose `classifier` is our
    `qa_outputs`): every token's -> PredictionHead -> (start, end) logits.

    Returns (start_logits, end_logits), each [batch, length] float32.
    """

    config: BertConfig

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        input_mask: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, Array]:
        if self.config.prediction_head:
            seq = _token_states(self.config, input_ids, segment_ids, input_mask, deterministic)
        else:
            seq, _ = BertModel(self.config, name="bert")(
                input_ids, segment_ids, input_mask, deterministic
            )
        logits = dense(self.config, 2, ("embed", "classes"), "qa_outputs", jnp.float32)(seq)
        return logits[..., 0], logits[..., 1]


# mean: over real tokens; cls: the [CLS] state; max: per dimension over real tokens.
POOLINGS = ("mean", "cls", "max")


def pool_rows(hidden: Array, input_mask: Array, pooling: str) -> Array:
    """Each row's `pooling` over its real tokens: hidden [batch, length, embed] float32,
    input_mask [batch, length] -> [batch, embed]. A row without any real token pools to zeros."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "max":
        real = input_mask[..., None] > 0  # [batch, length, 1]
        pooled = jnp.max(jnp.where(real, hidden, -jnp.inf), axis=1)
        return jnp.where(jnp.any(real, axis=1), pooled, 0.0)  # [batch, embed]
    weights = input_mask[..., None].astype(jnp.float32)  # [batch, length, 1]
    return jnp.sum(hidden * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)


def pool_packed(hidden: Array, sequence_ids: Array, starts: Array, pooling: str) -> Array:
    """Each packed sentence's `pooling` over its own tokens (bert/finetuning/packing.py).

    Args:
      hidden: [rows, length, embed] float32, packed rows' hidden states.
      sequence_ids: [rows, length] the sentence each position holds (0..sentences-1; any other
        value: none).
      starts: [sentences] each sentence's first position in the rows laid end to end.

    Returns: [sentences, embed].
    """
    flat = hidden.reshape(-1, hidden.shape[-1])  # [rows * length, embed]
    if pooling == "cls":
        return jnp.take(flat, starts, axis=0)
    ids, count = sequence_ids.reshape(-1), starts.shape[0]
    if pooling == "max":
        return jax.ops.segment_max(flat, ids, count)
    sums = jax.ops.segment_sum(flat, ids, count)  # [sentences, embed]
    tokens = jax.ops.segment_sum(jnp.ones_like(ids, jnp.float32), ids, count)  # [sentences]
    return sums / jnp.maximum(tokens, 1e-9)[:, None]


class BertForSentenceEmbedding(nn.Module):
    """A sentence embedding: the encoder's last hidden states pooled (one of POOLINGS, padding
    excluded as in sentence-transformers' Pooling module), optionally L2-normalised, in float32.

    Returns: [batch, embed]. A row without any real token (batch padding) pools to zeros.
    Packed rows (several sentences per row, bert/finetuning/packing.py) also pass `position_ids`,
    `sequence_ids` and `starts` (see `pool_packed`) and get [sentences, embed]: each sentence's
    embedding is the one it has alone in a row.

    The embedding never reads BERT's pooler; `with_pooler` keeps its parameters in the model
    (so that training from a BERT checkpoint keeps and exports them). Encoders without one
    (config.prediction_head: ModernBERT) never have it, and inference passes False (a
    BertForMaskedLM directory has none either).
    """

    config: BertConfig
    pooling: str = "mean"
    normalize: bool = True
    with_pooler: bool = True

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        input_mask: Array | None = None,
        deterministic: bool = True,
        position_ids: Array | None = None,
        sequence_ids: Array | None = None,
        starts: Array | None = None,
    ) -> Array:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        if input_mask is None:
            input_mask = jnp.ones_like(input_ids)
        pool = self.with_pooler and not self.config.prediction_head
        hidden, _ = BertModel(self.config, name="bert")(
            input_ids, segment_ids, input_mask, deterministic, position_ids, pool=pool
        )
        hidden = hidden.astype(jnp.float32)  # [batch, length, embed]
        if starts is None:
            pooled = pool_rows(hidden, input_mask, self.pooling)
        else:
            pooled = pool_packed(hidden, sequence_ids, starts, self.pooling)
        if self.normalize:
            norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
            pooled = pooled / jnp.maximum(norm, 1e-12)
        return pooled  # [batch or sentences, embed]


# The task models whose head config.prediction_head makes ModernBERT's.
TASK_MODELS = (BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering)


def fine_tuning_start(model: nn.Module, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a checkpoint (`params`: "bert" and whichever heads it holds) that
    start fine-tuning `model`; the rest of `model` starts from random weights.

    Always the encoder; with config.prediction_head (ModernBERT) without BERT's pooler, which
    those models never have (a masked-LM pre-training run keeps an untrained one). For a task
    model with ModernBERT's head also that head's transform: the checkpoint's own task head's
    (`head`), else its MLM head's transform, which has the same shape and function
    (transformers' from_pretrained fills a ModernBERT task model's `head.*` from a
    ModernBertForMaskedLM checkpoint the same way).
    """
    start = {"bert": params["bert"]}
    if not model.config.prediction_head:
        return start
    start["bert"] = {name: value for name, value in params["bert"].items() if name != "pooler"}
    if isinstance(model, TASK_MODELS):
        if "head" in params:
            start["head"] = params["head"]
        elif "mlm" in params:
            start["head"] = {name: params["mlm"][name] for name in ("transform", "transform_norm")}
    return start
