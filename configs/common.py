"""Shared config pieces: the model size table and the `configs/x.py:key=value,...` arg parser."""

import ml_collections

from util.errors import UserError

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
            raise UserError(f"config arg {item!r} is not of the form key=value (in {arg!r})")
        key, text = (part.strip() for part in item.split("=", 1))
        if key not in defaults:
            raise UserError(f"unknown config arg {key!r}; known: {', '.join(sorted(defaults))}")
        kind = type(defaults[key])
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise UserError(text)
                values[key] = text.lower() in ("true", "1")
            else:
                values[key] = kind(text)
        except ValueError:
            raise UserError(f"config arg {key}={text!r} is not a valid {kind.__name__}") from None
    return values


def model_config(size: str, vocab_size: int) -> ml_collections.ConfigDict:
    """The `config.model` section for a named size; every field commented.

    Args:
      size: one of SIZES.
      vocab_size: number of token ids (the tokenizer's vocabulary size).
    """
    if size not in SIZES:
        raise UserError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
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
    m.initializer_range = 0.02  # standard deviation of new weights
    # truncated_normal (cut at 2 standard deviations, as Google's BERT) or normal (as HF)
    m.initializer = "truncated_normal"
    m.dtype = "auto"  # compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU (LN, logits: f32)
    m.param_dtype = "float32"  # parameter (master weight) dtype
    m.attention_impl = "xla"  # jax.nn.dot_product_attention implementation: xla or cudnn
    return m


def finetune_model() -> ml_collections.ConfigDict:
    """`config.model` of a fine-tuning job: what may differ from the checkpoint's own config
    (the sizes always come from the checkpoint)."""
    m = ml_collections.ConfigDict()
    m.dtype = "auto"  # compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU
    m.attention_impl = "xla"  # xla, or cudnn (GPU; only with attention_dropout 0)
    m.hidden_dropout = 0.1  # dropout on embeddings, residual branches and the task head
    m.attention_dropout = 0.1  # dropout on attention probabilities
    # the task head's new weights: normal (as HF transformers) or truncated_normal (cut at 2
    # standard deviations, as Google's BERT; its smaller draws left the NER tagger behind after a
    # short schedule); standard deviation model.initializer_range
    m.initializer = "normal"
    return m


def finetune_train(
    batch_size: int, learning_rate: float, epochs: float
) -> ml_collections.ConfigDict:
    """`config.train` of a fine-tuning job (AdamW, warm-up then linear decay, as BERT)."""
    t = ml_collections.ConfigDict()
    t.batch_size = batch_size  # global batch (sequences per optimizer step, all hosts together)
    t.accumulation_steps = 1  # micro-batches per step (batch_size must divide evenly)
    t.epochs = epochs  # passes over the training set (whole batches only)
    t.steps = 0  # optimizer steps; >0 overrides epochs
    # this many batches of the seeded permutation are sorted by length together, then the epoch's
    # batches are shuffled: a batch holds rows of similar lengths, so its length bucket
    # (pad_to_multiple_of) is short; 0: plain random batches (slower; better F1 on a short NER
    # schedule)
    t.group_by_length = 50
    # pack each batch's rows whole into rows of pack_length tokens (a per-token task, ner; a
    # bi-encoder's texts of every side, embeddings), so random batches carry almost no padding;
    # needs group_by_length 0
    t.pack = False
    # tokens per packed row (at most max_seq_length); a batch packs into the rows an average
    # batch needs, and into a longer length bucket's rows where it does not fit
    t.pack_length = 64
    t.warmup_proportion = 0.1  # fraction of the steps spent in linear warm-up
    t.optimizer = "adamw"  # adamw (BERT's fine-tuning optimizer) or lamb
    t.learning_rate = learning_rate  # peak learning rate, decayed linearly to 0
    t.weight_decay = 0.01  # decoupled weight decay, not applied to biases and LayerNorm
    t.b1 = 0.9  # first-moment decay
    t.b2 = 0.999  # second-moment decay
    t.eps = 1e-6  # Adam epsilon (BERT's value)
    t.clip_norm = 1.0  # global gradient-norm clipping; 0 disables
    t.log_every = 50  # steps between training-metric reports
    t.eval_every = 0  # steps between evaluations during training; 0: only at the end
    t.checkpoint_every = 1000  # steps between checkpoints (and one at the end)
    t.max_to_keep = 1  # checkpoints kept
    t.async_checkpoints = True  # save in the background while training goes on
    # threads compiling the steps of the run's length buckets (training and evaluation) in the
    # background while earlier steps run; 0: each shape compiles when first needed
    t.compile_ahead_threads = 1
    return t


def finetune_common(config: ml_collections.ConfigDict, max_seq_length: int) -> None:
    """Fields every fine-tuning job has, added to `config`."""
    config.seed = 0  # seeds the head's initialisation, dropout and the data order
    # checkpoint: a workdir of ours, an HF or Google TF directory, or a Hub model id org/name[@rev]
    config.init_from = ""
    # tokenizer file or folder, or a Hub model id; empty: the one beside the checkpoint
    config.tokenizer = ""
    config.max_seq_length = max_seq_length  # tokens per sequence, special tokens included
    # each batch is padded to the smallest length bucket that holds its longest row: this times
    # 1, 2, 3, 4, 6, 8, 12, 16, ... (at most max_seq_length; bert/finetuning/buckets.py).
    # One compiled shape per bucket, little work on padding; 0: every batch at max_seq_length
    config.pad_to_multiple_of = 8
    # a model taking several texts (a bi-encoder's sides) pads each to its own bucket (packed:
    # into rows of its own) when one's mean length is at least this many times another's (query
    # and passage); else they share one
    config.text_bucket_ratio = 1.5
    config.train_limit = 0  # use only N training examples (limit_by picks which); 0: all
    config.eval_limit = 0  # evaluate only N examples of each split (limit_by picks which); 0: all
    # which examples the limits keep: first (the first N, as the files order them) or random (a
    # sample drawn with config.seed; files sorted by genre or topic give a skewed first N)
    config.limit_by = "first"
    config.eval_batch_size = 64  # sequences per prediction batch (all hosts together)
    config.mesh = (-1, 1, 1)  # devices along (data, fsdp, tensor); one -1 takes the rest
    config.model = finetune_model()
