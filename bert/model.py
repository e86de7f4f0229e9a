"""BERT encoder in Flax Linen: embeddings, self-attention, transformer layers, pooler.

Post-LayerNorm BERT exactly as Devlin et al. (2019) and Google's original release, so that
Google and Hugging Face checkpoints load and give the same numbers. Modules are pure: no I/O.

Logical axis names used for parameters and activations (mapped to mesh axes by
bert/training/sharding.py):
  vocab, embed, heads (the fused heads x head_dim axis), mlp, position, token_type,
  batch, length, kv_length.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert.dropout import Dropout
from bert.rope import rotate

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}
ATTENTION_IMPLS = ("xla", "cudnn")
POSITION_EMBEDDINGS = ("learned", "rope")
# How new weights are drawn, with standard deviation initializer_range: cut at two standard
# deviations and not rescaled (Google's BERT), or not cut (Hugging Face transformers).
INITIALIZERS = ("truncated_normal", "normal")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyperparameters of the encoder; hashable so it can be a static jit argument."""

    vocab_size: int
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    initializer: str = "truncated_normal"
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "xla"
    # The options of modern encoders (ModernBERT and kin); the defaults are 2018 BERT.
    position_embedding: str = "learned"  # learned absolute positions, or "rope" (rotary)
    rope_theta: float = 10000.0  # the rotary base of global-attention layers
    local_rope_theta: float = 10000.0  # the rotary base of local-attention layers
    pre_norm: bool = False  # pre-LN layers and a final norm; False: BERT's post-LN layers
    embedding_norm: bool = True  # a norm after the embeddings (with pre_norm, layer 0 then has
    # no norm before its attention, as ModernBERT)
    norm_bias: bool = True  # LayerNorms with a bias
    gated_mlp: bool = False  # act(x W) * (x V): GeGLU with gelu, SwiGLU with silu
    attention_bias: bool = True  # biases of the query/key/value and output projections
    mlp_bias: bool = True  # biases of the MLP's two projections
    head_bias: bool = True  # the bias of the MLM head's transform
    decoder_bias: bool = True  # the bias of the MLM output (vocabulary) layer
    local_window: int = 0  # tokens a local-attention layer sees (|i - j| <= window // 2); 0: none
    global_every: int = 1  # with a local window: layers 0, N, 2N, ... attend globally

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.initializer_range <= 1:  # BERT's is 0.02; above 1 the loss explodes
            raise ValueError(
                f"model.initializer_range must be in (0, 1], got {self.initializer_range}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) is not a multiple of "
                f"model.num_heads ({self.num_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"model.hidden_act {self.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}"
            )
        if self.initializer not in INITIALIZERS:
            raise ValueError(
                f"model.initializer {self.initializer!r} is not one of {', '.join(INITIALIZERS)}"
            )
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"model.attention_impl {self.attention_impl!r} is not one of "
                f"{', '.join(ATTENTION_IMPLS)}"
            )
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"model.position_embedding {self.position_embedding!r} is not one of "
                f"{', '.join(POSITION_EMBEDDINGS)}"
            )
        if self.local_window < 0 or self.global_every < 1:
            raise ValueError(
                f"model.local_window must be >= 0 and model.global_every >= 1, got "
                f"{self.local_window} and {self.global_every}"
            )
        if self.type_vocab_size < 0:
            raise ValueError(f"model.type_vocab_size must be >= 0, got {self.type_vocab_size}")
        for name in ("dtype", "param_dtype"):
            try:
                jnp.dtype(getattr(self, name))
            except TypeError:
                raise ValueError(f"model.{name} {getattr(self, name)!r} is not a dtype") from None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def is_local(self, layer: int) -> bool:
        """Whether layer `layer` (from 0) attends within the local window only."""
        return self.local_window > 0 and layer % self.global_every != 0

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "BertConfig":
        """Builds a config from a dict (e.g. `config.model.to_dict()`), rejecting unknown keys.

        `dtype="auto"` becomes bfloat16 on GPU/TPU and float32 on CPU.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown model config fields: {', '.join(unknown)}")
        fields = dict(fields)
        if fields.get("dtype") == "auto":
            fields["dtype"] = "float32" if jax.default_backend() == "cpu" else "bfloat16"
        return cls(**fields)


def _init(config: BertConfig) -> nn.initializers.Initializer:
    if config.initializer == "normal":
        return nn.initializers.normal(stddev=config.initializer_range)
    return nn.initializers.truncated_normal(stddev=config.initializer_range)


def matmul_2d(lhs: Array, rhs: Array, dimension_numbers, precision=None, **kwargs) -> Array:
    """`lax.dot_general` for Dense: [..., in] x [in, out] done as one 2-D matrix product.

    The same numbers, but the weight gradient then contracts one dimension instead of
    (batch, length), which XLA's CPU backend runs markedly faster, whole fine-tuning steps
    included.
    """
    (contract_lhs, contract_rhs), batch_dims = dimension_numbers
    if lhs.ndim <= 2 or contract_lhs != (lhs.ndim - 1,) or contract_rhs != (0,) or batch_dims[0]:
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, **kwargs)
    flat = lhs.reshape(-1, lhs.shape[-1])  # [batch * length, in]
    out = jax.lax.dot_general(flat, rhs, (((1,), (0,)), ((), ())), precision, **kwargs)
    return out.reshape(*lhs.shape[:-1], rhs.shape[-1])


def dense(
    config: BertConfig,
    features: int,
    axes: tuple[str, str],
    name: str,
    dtype: Any = None,
    use_bias: bool = True,
) -> nn.Dense:
    """A Dense layer with BERT's initialiser and logically partitioned kernel and bias."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dot_general=matmul_2d,
        dtype=dtype or config.dtype,
        param_dtype=config.param_dtype,
        kernel_init=nn.with_logical_partitioning(_init(config), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)),
        name=name,
    )


def layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
    """LayerNorm computed in float32 whatever the compute dtype."""
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        use_bias=config.norm_bias,
        dtype=jnp.float32,
        param_dtype=config.param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
        name=name,
    )


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    config: BertConfig

    def setup(self):
        c = self.config
        self.word_embeddings = self._table("word_embeddings", "vocab", c.vocab_size)
        if c.position_embedding == "learned":
            self.position_embeddings = self._table(
                "position_embeddings", "position", c.max_position_embeddings
            )
        if c.type_vocab_size:
            self.token_type_embeddings = self._table(
                "token_type_embeddings", "token_type", c.type_vocab_size
            )
        if c.embedding_norm:
            self.layer_norm = layer_norm(c, "layer_norm")
        self.dropout = Dropout(c.hidden_dropout)

    def _table(self, name: str, axis: str, rows: int) -> Array:
        """An embedding table [rows, embed], its rows on the logical axis `axis`."""
        c = self.config
        init = nn.with_logical_partitioning(_init(c), (axis, "embed"))
        return self.param(name, init, (rows, c.hidden_size), c.param_dtype)

    def __call__(
        self, input_ids: Array, segment_ids: Array, position_ids: Array, deterministic: bool
    ) -> Array:
        c = self.config
        x = jnp.take(self.word_embeddings, input_ids, axis=0)  # [batch, length, embed]
        if c.position_embedding == "learned":
            x = x + jnp.take(self.position_embeddings, position_ids, axis=0)
        if c.type_vocab_size:
            x = x + jnp.take(self.token_type_embeddings, segment_ids, axis=0)
        if c.embedding_norm:
            x = self.layer_norm(x)
        x = x.astype(c.dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return self.dropout(x, deterministic=deterministic)


class SelfAttention(nn.Module):
    """Multi-head self-attention with the padding mask, output projection not included."""

    config: BertConfig
    local: bool = False  # attend within config.local_window only

    @nn.compact
    def __call__(
        self,
        x: Array,
        input_mask: Array,
        deterministic: bool,
        blocks: Array | None = None,
        positions: Array | None = None,
    ) -> Array:
        """blocks: [batch, length] packed-sequence numbers (None: one sequence per row); a
        token then attends only to the real tokens of its own block. positions: [batch or 1,
        length], the rotary positions (config.position_embedding "rope")."""
        c = self.config
        batch, length, _ = x.shape

        def heads(name: str) -> Array:
            y = dense(c, c.hidden_size, ("embed", "heads"), name, use_bias=c.attention_bias)(x)
            return y.reshape(batch, length, c.num_heads, c.head_dim)  # [batch, length, h, kv]

        q, k, v = heads("query"), heads("key"), heads("value")
        if c.position_embedding == "rope":
            theta = c.local_rope_theta if self.local else c.rope_theta
            q, k = rotate(q, positions, theta), rotate(k, positions, theta)
        dropout_active = not deterministic and c.attention_dropout > 0.0
        if dropout_active and c.attention_impl == "cudnn":
            raise ValueError(
                "model.attention_impl='cudnn' cannot apply attention dropout; "
                "set model.attention_dropout=0.0 or model.attention_impl='xla'"
            )
        if (blocks is not None or self.local) and c.attention_impl == "cudnn":
            raise ValueError(
                "model.attention_impl='cudnn' cannot attend within packed sequences or a local "
                "window; set config.train.pack=False and model.local_window=0, or "
                "model.attention_impl='xla'"
            )
        mask = input_mask[:, None, None, :].astype(jnp.bool_)  # [batch, 1, 1, kv_length]
        if blocks is not None:  # [batch, 1, length, kv_length]
            mask = mask & (blocks[:, None, :, None] == blocks[:, None, None, :])
        if self.local:  # [1, 1, length, kv_length]
            rows = jnp.arange(length)
            mask = mask & (jnp.abs(rows[:, None] - rows[None, :]) <= c.local_window // 2)
        if dropout_active:
            out = self._attention_with_dropout(q, k, v, mask)
        elif c.attention_impl == "cudnn":
            # cuDNN flash attention takes lengths, not masks: BERT inputs are right-padded.
            lengths = jnp.sum(input_mask, axis=-1, dtype=jnp.int32)
            out = jax.nn.dot_product_attention(
                q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                implementation="cudnn",
            )  # fmt: skip
        else:
            out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
        return out.reshape(batch, length, c.hidden_size)  # [batch, length, heads*kv]

    def _attention_with_dropout(self, q: Array, k: Array, v: Array, mask: Array) -> Array:
        """Explicit attention (softmax in float32) with dropout on the probabilities; `mask`
        [batch, 1, 1 or length, kv_length] marks the keys each query may attend to."""
        c = self.config
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        logits = logits / jnp.sqrt(jnp.float32(c.head_dim))
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1)
        probs = Dropout(c.attention_dropout)(probs, deterministic=False)
        return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(c.dtype), v)


class TransformerLayer(nn.Module):
    """One post-LN layer, x = LN(x + Attn(x)); x = LN(x + MLP(x)), or with config.pre_norm one
    pre-LN layer, x = x + Attn(LN(x)); x = x + MLP(LN(x)). The norms keep their names
    (attention_norm, output_norm) in both."""

    config: BertConfig
    index: int = 0  # the layer's number, from 0 (local or global attention; layer 0's norm)

    @nn.compact
    def __call__(
        self,
        x: Array,
        input_mask: Array,
        deterministic: bool,
        blocks: Array | None = None,
        positions: Array | None = None,
    ) -> Array:
        c = self.config
        drop = functools.partial(Dropout(c.hidden_dropout), deterministic=deterministic)
        attention = SelfAttention(c, c.is_local(self.index), name="attention")
        out = functools.partial(dense, c, c.hidden_size, ("heads", "embed"), "attention_output",
                                use_bias=c.attention_bias)  # fmt: skip
        if c.pre_norm:
            h = x if self.index == 0 and c.embedding_norm else layer_norm(c, "attention_norm")(x)
            h = attention(h.astype(c.dtype), input_mask, deterministic, blocks, positions)
            x = x + drop(out()(h))
            x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
            h = self._mlp(layer_norm(c, "output_norm")(x).astype(c.dtype))
            x = x + drop(h)
            return nn.with_logical_constraint(x, ("batch", "length", "embed"))
        attn = attention(x, input_mask, deterministic, blocks, positions)
        x = layer_norm(c, "attention_norm")(x + drop(out()(attn))).astype(c.dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        h = self._mlp(x)
        x = layer_norm(c, "output_norm")(x + drop(h)).astype(c.dtype)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))

    def _mlp(self, x: Array) -> Array:
        """The feed-forward block: act(x W1) W2, or gated, (act(x W) * (x V)) W2 with W and V
        one projection's two halves."""
        c = self.config
        width = 2 * c.intermediate_size if c.gated_mlp else c.intermediate_size
        h = dense(c, width, ("embed", "mlp"), "intermediate", use_bias=c.mlp_bias)(x)
        if c.gated_mlp:
            h, gate = jnp.split(h, 2, axis=-1)
            h = ACTIVATIONS[c.hidden_act](h) * gate
        else:
            h = ACTIVATIONS[c.hidden_act](h)  # [batch, length, mlp]
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        return dense(c, c.hidden_size, ("mlp", "embed"), "output", use_bias=c.mlp_bias)(h)


class BertModel(nn.Module):
    """The BERT encoder with its pooler.

    Call with `input_ids`, `segment_ids`, `input_mask` (all [batch, length] integers; mask 1 for
    real tokens, 0 for padding). Returns (sequence_output [batch, length, embed],
    pooled_output [batch, embed], or None with `pool` False): the last hidden states and
    tanh(W h_[CLS] + b).

    Packed rows (several sequences one after another in a row, bert/finetuning/packing.py) also
    pass `position_ids` [batch, length], restarting at 0 where each sequence starts: each
    sequence then gets its own positions and attends only to itself, so its hidden states
    are those it has alone in a row. (The pooled output is then that of the row's first.)
    """

    config: BertConfig

    def setup(self):
        c = self.config
        self.embeddings = Embeddings(c)
        self.layers = [TransformerLayer(c, i, name=f"layer_{i}") for i in range(c.num_layers)]
        if c.pre_norm:
            self.final_norm = layer_norm(c, "final_norm")
        self.pooler = dense(c, c.hidden_size, ("embed", "embed_out"), "pooler")

    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        input_mask: Array | None = None,
        deterministic: bool = True,
        position_ids: Array | None = None,
        pool: bool = True,
    ) -> tuple[Array, Array | None]:
        if segment_ids is None:
            segment_ids = jnp.zeros_like(input_ids)
        if input_mask is None:
            input_mask = jnp.ones_like(input_ids)
        blocks = None
        if position_ids is None:
            position_ids = jnp.arange(input_ids.shape[-1])[None, :]  # [1, length]
        else:  # a new block at each position 0
            blocks = jnp.cumsum(position_ids == 0, axis=-1)  # [batch, length]
        x = self.embeddings(input_ids, segment_ids, position_ids, deterministic)
        for layer in self.layers:
            x = layer(x, input_mask, deterministic, blocks, position_ids)
        if self.config.pre_norm:
            x = self.final_norm(x).astype(self.config.dtype)
        if not pool:  # the pooler's parameters are then not needed (HF's BertForMaskedLM)
            return x, None
        pooled = jnp.tanh(self.pooler(x[:, 0]))  # [batch, embed]
        return x, pooled

    def word_embedding_table(self) -> Array:
        """The [vocab, embed] input embedding table (tied to the MLM output layer)."""
        return self.embeddings.word_embeddings
