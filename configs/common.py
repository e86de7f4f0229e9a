"""Shared config pieces: the model size table and the `configs/x.py:key=value,...` arg parser."""

import ml_collections

# name -> (layers, hidden width). Heads are width / 64 and the feed-forward width is 4x width,
# as in the BERT paper and Google's 24 smaller BERT models (Turc et al., 2019).
SIZES: dict[str, tuple[int, int]] = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}


def parse_arg(arg: str | None, defaults: dict[str, object]) -> dict[str, object]:
    """Parses the text after the colon in `--config=configs/x.py:size=mini,steps=100`.

    Args:
      arg: comma-separated `key=value` pairs (or None / "" for no overrides).
      defaults: the accepted keys with their default values; a value is converted to the type
        of its default.

    Returns:
      `defaults` updated with the parsed values.

    Raises:
      ValueError: naming an unknown key, a pair without `=`, or a value of the wrong type.
    """
    values = dict(defaults)
    for item in (arg or "").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"config arg {item!r} is not of the form key=value (in {arg!r})")
        key, text = (part.strip() for part in item.split("=", 1))
        if key not in defaults:
            raise ValueError(f"unknown config arg {key!r}; known: {', '.join(sorted(defaults))}")
        kind = type(defaults[key])
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                values[key] = text.lower() in ("true", "1")
            else:
                values[key] = kind(text)
        except ValueError:
            raise ValueError(f"config arg {key}={text!r} is not a valid {kind.__name__}") from None
    return values


def model_config(size: str, vocab_size: int) -> ml_collections.ConfigDict:
    """The `config.model` section for a named size; every field commented.

    Args:
      size: one of SIZES.
      vocab_size: number of token ids (the tokenizer's vocabulary size).
    """
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    layers, width = SIZES[size]
    m = ml_collections.ConfigDict()
    m.vocab_size = vocab_size  # token ids; 0: the tokenizer's vocabulary size
    m.hidden_size = width  # width of the residual stream
    m.num_layers = layers  # transformer layers
    m.num_heads = width // 64  # attention heads of 64 dimensions each
    m.intermediate_size = 4 * width  # feed-forward inner width
    m.max_position_embeddings = 512  # longest sequence the position table covers
    m.type_vocab_size = 2  # segment (token type) ids: sentence A / sentence B
    m.hidden_act = "gelu"  # feed-forward activation: gelu (exact), gelu_new (tanh), relu, silu
    m.hidden_dropout = 0.1  # dropout on embeddings and every residual branch
    m.attention_dropout = 0.1  # dropout on attention probabilities (xla implementation only)
    m.layer_norm_eps = 1e-12  # LayerNorm epsilon, as in the original BERT
    m.initializer_range = 0.02  # std of the truncated-normal initialiser
    m.dtype = "auto"  # compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU (LN, logits: f32)
    m.param_dtype = "float32"  # parameter (master weight) dtype
    m.attention_impl = "xla"  # jax.nn.dot_product_attention implementation: xla or cudnn
    return m
