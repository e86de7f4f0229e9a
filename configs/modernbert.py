"""Pre-training a modern encoder from scratch: ModernBERT's architecture and recipe (Warner et al.
2024, arXiv 2412.13663), through the same job as BERT (bert/jobs/pretrain.py).

Usage:
  python main.py --config=configs/modernbert.py:size=tiny,recipe=short --workdir=runs/modern \
      --config.data.input='corpus/*.txt' --config.data.format=text

The arg after the colon takes `size` (tiny, mini, small, base, large; default base), `recipe`
(paper: ModernBERT's first phase, sequence 1,024 in batches of 4,608 on a cluster, the default;
short: the size's run on one machine, SHORT_RUNS below), `vocab_size` (0: take it from the
tokenizer) and `mode` (train, or evaluate: the held-out MLM metrics of config.init_from).

What differs from configs/bert_base.py (whose every other field, with its comment, is in
configs/common.py): the encoder (rotary positions, pre-LN, GeGLU, no biases, local attention
with a global layer every third), the masked LM alone at a 30% masking rate on packed rows whose
documents attend only to themselves (ModernBERT's unpadded sequences), and AdamW with a
warmup-stable-decay schedule. The workdir exports as transformers' ModernBertForMaskedLM:
  python -m bert.convert runs/modern runs/modern_hf --to=hf

Sources, and where they disagree: the paper; the released answerdotai/ModernBERT-base and -large
config.json files; transformers 4.57's ModernBertConfig defaults (which are ModernBERT-base's
released config.json, but for classifier_pooling: "cls" there, "mean" in both released files);
and the phase-1 training file of ModernBERT's repository (yamls/modernbert/
modernbert-base-pretrain.yaml, "the yaml" below).
"""

import ml_collections

from configs import common
from util.errors import UserError

# name -> (layers, width, attention heads, GeGLU inner width). base and large are ModernBERT's
# (the paper, which gives the GLU's expansion, twice the inner width: 2,304 and 5,248; the
# released config.json files). tiny, mini and small are ours: BERT's small shapes
# (configs/common.py SIZES) with ModernBERT's rules: heads of 64 dimensions and an inner width
# 1.5 x the width (base's 1,152 / 768; large's 2,624 / 1,024 was chosen for GPU tiles).
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 128, 2, 192),
    "mini": (4, 256, 4, 384),
    "small": (4, 512, 8, 768),
    "base": (22, 768, 12, 1152),
    "large": (28, 1024, 16, 2624),
}
# recipe=paper, per size: (peak learning rate, warm-up steps). base: 8e-4 after 3B tokens of
# warm-up, large: 5e-4 after 2B (the paper; large was later restarted at 5e-5 after its loss
# plateaued, not reproduced here), at the yaml's 4,608 x 1,024 tokens a step. The smaller sizes
# take base's.
PAPER_RUNS: dict[str, tuple[float, int]] = {
    "tiny": (8e-4, 636),
    "mini": (8e-4, 636),
    "small": (8e-4, 636),
    "base": (8e-4, 636),
    "large": (5e-4, 424),
}
# recipe=short, per size: (SentencePiece pieces, batch, steps, peak AdamW learning rate, sequence
# length), as configs/bert_base.py's SHORT_RUNS with AdamW's rates; docs/pretraining.md says which
# were measured.
SHORT_RUNS: dict[str, tuple[int, int, int, float, int]] = {
    "tiny": (4096, 32, 4000, 3e-3, 128),
    "mini": (8192, 64, 2000, 2e-3, 128),
    "small": (16384, 64, 5000, 1.5e-3, 128),
    "base": (32768, 128, 10000, 8e-4, 128),
    "large": (32768, 256, 10000, 5e-4, 128),
}
# ModernBERT's weight decay: each step multiplies every weight matrix and embedding by
# (1 - 1e-5 x lr / peak lr) (Composer's decoupled AdamW, not scaled by the learning rate).
# optax's AdamW multiplies by (1 - lr x weight_decay): weight_decay = 1e-5 / peak lr is the same.
DECAY_PER_STEP = 1e-5


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.pretrain_args(arg)
    size = str(args["size"])
    config = common.pretrain_config(str(args["mode"]), model_config(size, int(args["vocab_size"])))
    config.max_seq_length = 1024  # tokens per row (the yaml's first phase; 8,192 came later)
    config.objective = "mlm"  # the masked LM alone on packed rows (no next sentence prediction)
    d = config.data
    d.sentencepiece_vocab_size = 50368  # ModernBERT's vocabulary size (a multiple of 64)
    d.sentencepiece_model_type = "bpe"  # ModernBERT's tokenizer is BPE (OLMo's, modified)
    d.mask_rate = 0.3  # the paper's 30% (the yaml evaluates at 15%; here evaluation uses this)
    d.max_predictions_per_seq = round(config.max_seq_length * d.mask_rate)  # room for all
    # each document's part of a row attends to itself alone, its positions from 0 (ModernBERT
    # trains on unpadded sequences that never see each other)
    d.pack_attention = "document"
    t = config.train
    t.batch_size = 4608  # the yaml's global batch (which it warms up over 50B tokens; not here)
    t.steps = 364_000  # about the yaml's 1.719T tokens at 4,608 x 1,024 tokens a step
    t.learning_rate, t.warmup_steps = PAPER_RUNS[size]  # peak AdamW rate, linear warm-up steps
    t.optimizer = "adamw"  # the paper's StableAdamW is AdamW with per-tensor update clipping
    t.schedule = "wsd"  # the paper's trapezoid: warm-up, the peak held, a final decay
    # the decay's share: ours for one run (ModernBERT held the peak through the yaml's phase,
    # t_decay 0, and decayed at the end of its later long-context phase); Hagele et al. (2024)
    # find a 1-sqrt decay over about a fifth of the steps as good as a cosine schedule
    t.decay_proportion = 0.2
    t.decay_shape = "1-sqrt"  # the paper's decay (1 - sqrt of the decay's fraction gone)
    t.end_learning_rate = 0.0  # the yaml's alpha_f
    t.b2 = 0.98  # the paper's and the yaml's betas (0.9, 0.98); b1 stays 0.9
    t.eps = 1e-6  # the yaml's epsilon
    t.log_every = 100  # steps between metric reports (the yaml's console interval)
    t.eval_every = 4000  # steps between evaluations (the yaml's eval_interval)
    t.checkpoint_every = 4000  # steps between checkpoints (the yaml's save_interval)
    if args["recipe"] == "short":
        common.short_run(config, *SHORT_RUNS[size])
    # ModernBERT's 1e-5 a step (DECAY_PER_STEP) at the recipe's peak rate; a flag changing
    # train.learning_rate does not change it
    t.weight_decay = DECAY_PER_STEP / t.learning_rate
    return config


def model_config(size: str, vocab_size: int) -> ml_collections.ConfigDict:
    """`config.model` of a ModernBERT size: every field, the modern ones as ModernBERT sets them."""
    if size not in SIZES:
        raise UserError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    m = common.encoder_config(vocab_size, *SIZES[size])
    # rotary positions have no table: this only bounds the sequence (ModernBERT's native length)
    m.max_position_embeddings = 8192
    m.type_vocab_size = 0  # no token types (segment ids are ignored)
    m.hidden_act = "gelu"  # the GeGLU's activation (exact gelu, as ModernBERT's)
    # dropout 0 as the released config.json files (embedding, MLP and attention dropout); the
    # yaml drops 10% of the attention output alone, which these two fields cannot say
    m.hidden_dropout = 0.0
    m.attention_dropout = 0.0
    m.layer_norm_eps = 1e-5  # ModernBERT's norm_eps
    # truncated_normal at 0.02 cut at 2 standard deviations is ModernBERT's (initializer_range,
    # initializer_cutoff_factor); it also scales its output projections by 1 / sqrt(2 x layers),
    # which is not done here
    m.initializer = "truncated_normal"
    m.position_embedding = "rope"  # rotary position embeddings
    # the global layers' rotary base: the released config.json's 160,000, the value after
    # ModernBERT's context extension to 8,192 tokens; its first phase (the yaml, 1,024 tokens)
    # used 10,000 in every layer
    m.rope_theta = 160000.0
    m.local_rope_theta = 10000.0  # the local layers' rotary base
    m.pre_norm = True  # pre-LN layers and a final norm
    m.embedding_norm = True  # a norm after the embeddings (and none before layer 0's attention)
    m.norm_bias = False  # LayerNorms without a bias
    m.gated_mlp = True  # GeGLU: gelu(x W) * (x V)
    m.attention_bias = False  # no biases in the query/key/value and output projections
    m.mlp_bias = False  # no biases in the MLP
    m.head_bias = False  # no bias in the MLM head's dense layer (classifier_bias)
    m.decoder_bias = True  # the MLM decoder keeps its bias (the one bias ModernBERT has)
    m.local_window = 128  # local layers see 128 tokens around each (|i - j| <= 64)
    m.global_every = 3  # layers 0, 3, 6, ... attend globally
    # fine-tuning from this workdir: ModernBERT's task heads (dense, gelu and norm before the
    # classifier, no tanh pooler; pre-training trains none of them)
    m.prediction_head = True
    # what a sequence classifier takes: the mean over the real tokens, as both released
    # config.json files (transformers' default is "cls", the first token's state)
    m.classifier_pooling = "mean"
    m.classifier_dropout = 0.0  # dropout before a task's classifier (the released 0.0)
    return m
