"""BERT encoder in Flax Linen: embeddings, self-attention, transformer layers, pooler.

Post-LayerNorm BERT exactly as Devlin et al. (2019) and Google's original release, so that
Google and Hugging Face checkpoints load and give the same numbers. Modules are pure: no I/O.

Logical axis names used for parameters and activations (mapped to mesh axes by
bert/training/sharding.py):
  vocab, embed, heads (the fused heads x head_dim axis), mlp, position, token_type,
  batch, length, kv_length, layers (the leading axis of scanned layers' parameters).

With `scan_layers` the layers are one `nn.scan` over a single layer body; `remat` recomputes
each layer in the backward pass. The layers are not all alike (local or global attention; no
attention norm in ModernBERT's layer 0), so the scanned body takes the layer's number as an input
and selects at run time the window mask, the RoPE theta and layer 0's norm (its parameters then
exist, unused): exactly the values of the unrolled layers. bert/layer_stack.py converts the
parameters between the two layouts (`layer_0`, `layer_1`, ... and one stacked `layers`).
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert.attention import ATTENTION_IMPLS, attend, kernel
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
POSITION_EMBEDDINGS = ("learned", "rope")
# How new weights are drawn, with standard deviation initializer_range: cut at two standard
# deviations and not rescaled (Google's BERT), or not cut (Hugging Face transformers).
INITIALIZERS = ("truncated_normal", "normal")
# What a rematerialised layer keeps for the backward pass: nothing, or its matrix products
# without batch dimensions (projections and MLP; the attention scores are recomputed).
REMAT_POLICIES = {"full": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}  # fmt: skip
STACKED_LAYERS = "layers"  # the scanned layers' module (and logical axis) name


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
    attention_impl: str = "auto"  # auto, xla or cudnn: the attention kernel (bert/attention.py)
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
    scan_layers: bool = False  # nn.scan over one layer body, parameters stacked in one "layers"
    # subtree (bert/layer_stack.py converts); False: one module per layer (layer_0, layer_1, ...)
    remat: str = "none"  # recompute each layer in the backward pass: none, full (keep nothing)
    # or dots (keep the matmul outputs); the numbers stay the unrolled stack's
    prediction_head: bool = False  # task heads as ModernBERT's: dense, activation and norm (as
    # the MLM head's transform) before the classifier, no tanh pooler; False: BERT's heads
    classifier_pooling: str = "cls"  # with prediction_head, what a sequence classifier takes:
    # the first token's state ("cls") or the mean over the real tokens ("mean")
    classifier_dropout: float = 0.0  # with prediction_head, dropout before the classifier
    embedding_size: int = 0  # the embeddings' width, projected to hidden_size (ELECTRA); 0: same

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
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"model.scan_layers must be True or False, got {self.scan_layers!r}")
        if self.remat != "none" and self.remat not in REMAT_POLICIES:
            raise ValueError(
                f"model.remat {self.remat!r} is not one of none, {', '.join(REMAT_POLICIES)}"
            )
        for name in ("type_vocab_size", "embedding_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("dtype", "param_dtype"):
            try:
                jnp.dtype(getattr(self, name))
            except TypeError:
                raise ValueError(f"model.{name} {getattr(self, name)!r} is not a dtype") from None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def embedding_width(self) -> int:
        return self.embedding_size or self.hidden_size

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


class Projection(nn.Module):
    """The kernel [in, hidden_size] and bias of one of attention's input projections: a Dense's
    parameters, named and initialised as `dense` names and initialises them, for SelfAttention
    to multiply by with the others in one product."""

    config: BertConfig

    @nn.compact
    def __call__(self, features_in: int) -> tuple[Array, Array | None]:
        c = self.config
        init = nn.with_logical_partitioning(_init(c), ("embed", "heads"))
        kernel = self.param("kernel", init, (features_in, c.hidden_size), c.param_dtype)
        if not c.attention_bias:
            return kernel, None
        zeros = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("heads",))
        return kernel, self.param("bias", zeros, (c.hidden_size,), c.param_dtype)


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
        return self.param(name, init, (rows, c.embedding_width), c.param_dtype)

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
        is_local: Array | None = None,
    ) -> Array:
        """blocks: [batch, length] packed-sequence numbers (None: one sequence per row); a
        token then attends only to the real tokens of its own block. positions: [batch or 1,
        length], the rotary positions (config.position_embedding "rope"). is_local: a bool
        scalar choosing local attention at run time (scanned layers), beside `self.local`."""
        c = self.config
        batch, length, _ = x.shape

        # the query, key and value projections as one matrix product (one [embed, 3 * heads]
        # kernel: a third of the products of three on a CPU), their parameters kept apart
        kernels, biases = zip(*(Projection(c, name=name)(x.shape[-1])
                                for name in ("query", "key", "value")), strict=True)  # fmt: skip
        qkv = matmul_2d(x.astype(c.dtype), jnp.concatenate(kernels, axis=1).astype(c.dtype),
                        (((x.ndim - 1,), (0,)), ((), ())))  # fmt: skip
        if c.attention_bias:
            qkv = qkv + jnp.concatenate(biases).astype(c.dtype)
        qkv = qkv.reshape(batch, length, 3, c.num_heads, c.head_dim)  # [batch, length, 3, h, kv]
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if c.position_embedding == "rope":
            q, k = self._rotate(q, k, positions, is_local)
        local = self.local or is_local is not None
        impl = kernel(
            c.attention_impl, dropout=not deterministic and c.attention_dropout > 0.0,
            full_mask=blocks is not None or local, dtype=q.dtype, head_dim=c.head_dim,
            backend=jax.default_backend(), scores=batch * c.num_heads * length * length,
        )  # fmt: skip
        mask = input_mask[:, None, None, :].astype(jnp.bool_)  # [batch, 1, 1, kv_length]
        if blocks is not None:  # [batch, 1, length, kv_length]
            mask = mask & (blocks[:, None, :, None] == blocks[:, None, None, :])
        if local:  # [1, 1, length, kv_length]
            rows = jnp.arange(length)
            window = jnp.abs(rows[:, None] - rows[None, :]) <= c.local_window // 2
            mask = mask & (window if is_local is None else window | ~is_local)
        drop = functools.partial(Dropout(c.attention_dropout), deterministic=False)
        band = c.local_window // 2 if self.local and is_local is None else 0  # keys it reads
        out = attend(impl, q, k, v, mask, input_mask, drop, band)
        return out.reshape(batch, length, c.hidden_size)  # [batch, length, heads*kv]

    def _rotate(self, q: Array, k: Array, positions: Array, is_local: Array | None):
        """q and k turned by their rotary positions with the theta of the layer's attention
        (local or global; with `is_local`, both computed and one selected)."""
        c = self.config
        theta = c.local_rope_theta if self.local else c.rope_theta
        turned = rotate(q, positions, theta), rotate(k, positions, theta)
        if is_local is None or c.local_rope_theta == c.rope_theta:
            return turned
        local = rotate(q, positions, c.local_rope_theta), rotate(k, positions, c.local_rope_theta)
        return tuple(jnp.where(is_local, a, b) for a, b in zip(local, turned, strict=True))


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
        layer: Array | None = None,
    ) -> Array:
        """layer: with scanned layers, the layer's number as a traced int32 scalar, which then
        stands for `index` (the choices it makes are selected at run time)."""
        c = self.config
        drop = functools.partial(Dropout(c.hidden_dropout), deterministic=deterministic)
        mixed = layer is not None and c.local_window > 0 and c.global_every > 1  # local or not
        is_local = layer % c.global_every != 0 if mixed else None
        attention = SelfAttention(c, layer is None and c.is_local(self.index), name="attention")
        out = functools.partial(dense, c, c.hidden_size, ("heads", "embed"), "attention_output",
                                use_bias=c.attention_bias)  # fmt: skip
        if c.pre_norm:
            h = self._attention_input(x, layer)
            h = attention(h, input_mask, deterministic, blocks, positions, is_local)
            x = x + drop(out()(h))
            x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
            h = self._mlp(layer_norm(c, "output_norm")(x).astype(c.dtype))
            x = x + drop(h)
            return nn.with_logical_constraint(x, ("batch", "length", "embed"))
        attn = attention(x, input_mask, deterministic, blocks, positions, is_local)
        x = layer_norm(c, "attention_norm")(x + drop(out()(attn))).astype(c.dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        h = self._mlp(x)
        x = layer_norm(c, "output_norm")(x + drop(h)).astype(c.dtype)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))

    def _attention_input(self, x: Array, layer: Array | None) -> Array:
        """A pre-LN layer's attention input: LN(x), but x itself in layer 0 after an embedding
        norm (ModernBERT); scanned (`layer` given), both and the one selected."""
        c = self.config
        if c.embedding_norm and layer is None and self.index == 0:
            return x.astype(c.dtype)
        h = layer_norm(c, "attention_norm")(x).astype(c.dtype)
        if c.embedding_norm and layer is not None:  # layer 0's norm parameters go unused
            return jnp.where(layer == 0, x.astype(c.dtype), h)
        return h

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
    real tokens, 0 for padding). Returns (sequence_output [batch, length, embed], pooled_output
    [batch, embed] or None with `pool` False): the last hidden states and tanh(W h_[CLS] + b).

    Packed rows (several sequences one after another in a row, bert/finetuning/packing.py) also
    pass `position_ids` [batch, length], restarting at 0 where each sequence starts: each then
    attends only to itself at its own positions, as alone in a row (pooled: the row's first).
    `embedded`: the output of embeddings shared with another encoder (ELECTRA's generator).
    """

    config: BertConfig

    def setup(self):
        c = self.config
        self.embeddings = Embeddings(c)
        layer = TransformerLayer
        if c.remat != "none":  # `deterministic` (argument 3, self being 0) stays static
            layer = nn.remat(layer, policy=REMAT_POLICIES[c.remat], static_argnums=(3,),
                             prevent_cse=not c.scan_layers)  # fmt: skip
        if c.scan_layers:
            self.layers = layer(c, name=STACKED_LAYERS)
        else:
            self.layers = [layer(c, i, name=f"layer_{i}") for i in range(c.num_layers)]
        if c.pre_norm:
            self.final_norm = layer_norm(c, "final_norm")
        if c.embedding_width != c.hidden_size:
            self.embeddings_project = dense(c, c.hidden_size, ("embed_out", "embed"),
                                            "embeddings_project")  # fmt: skip
        self.pooler = dense(c, c.hidden_size, ("embed", "embed_out"), "pooler")

    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        input_mask: Array | None = None,
        deterministic: bool = True,
        position_ids: Array | None = None,
        pool: bool = True,
        embedded: Array | None = None,
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
        if embedded is None:  # given: shared embeddings' output (ELECTRA's generator)
            embedded = self.embeddings(input_ids, segment_ids, position_ids, deterministic)
        project = self.config.embedding_width != self.config.hidden_size
        x = self.embeddings_project(embedded) if project else embedded  # [batch, length, embed]
        if self.config.scan_layers:
            x = self._scan(x, input_mask, deterministic, blocks, position_ids)
        else:
            for layer in self.layers:
                x = layer(x, input_mask, deterministic, blocks, position_ids)
        if self.config.pre_norm:
            x = self.final_norm(x).astype(self.config.dtype)
        if not pool:  # the pooler's parameters are then not needed (HF's BertForMaskedLM)
            return x, None
        pooled = jnp.tanh(self.pooler(x[:, 0]))  # [batch, embed]
        return x, pooled

    def _scan(self, x: Array, input_mask: Array, deterministic: bool, blocks, positions) -> Array:
        """x [batch, length, embed] through the layers as one nn.scan over one layer body (its
        parameters stacked on a leading "layers" axis), the layer's number a scanned input."""

        def body(module, carry, index, input_mask, blocks, positions):  # remat: static arg 3
            return module(carry, input_mask, deterministic, blocks, positions, index), None

        n = self.config.num_layers
        scan = nn.scan(body, variable_axes={"params": 0}, length=n,
                       split_rngs={"params": True, "dropout": True},
                       in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
                       metadata_params={nn.PARTITION_NAME: STACKED_LAYERS})  # fmt: skip
        return scan(self.layers, x, jnp.arange(n), input_mask, blocks, positions)[0]

    def word_embedding_table(self) -> Array:
        """The [vocab, embed] input embedding table (tied to the MLM output layer)."""
        return self.embeddings.word_embeddings
