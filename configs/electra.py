"""Pre-training ELECTRA (Clark et al. 2020, arXiv 2003.10555): a small generator's masked LM
and the encoder's replaced-token detection, through the same job as BERT (bert/jobs/pretrain.py,
objective bert/objectives/electra.py).

Usage:
  python main.py --config=configs/electra.py:size=tiny,recipe=short --workdir=runs/electra \
      --config.data.input='corpus/*.txt' --config.data.format=text

The arg after the colon takes `size` (tiny, mini, small, base, large; default base), `recipe`
(paper: the ELECTRA paper's pre-training of the size on a cluster, the default; short: the
size's run on one machine, SHORT_RUNS below), `vocab_size` (0: take it from the tokenizer) and
`mode` (train, or evaluate: the held-out metrics of config.init_from, an ELECTRA workdir).

What differs from configs/bert_base.py (whose every other field, with its comment, is in
configs/common.py): the objective (electra, on packed rows without next sentence prediction),
its `config.electra` section, the embeddings' width, and AdamW at ELECTRA's learning rates and
batches. Sources: the paper's Table 6 (pre-training hyper-parameters) and the official
repository's configure_pretraining.py and run_pretraining.py (google-research/electra, "the
official code" below). The workdir exports as transformers' ElectraForPreTraining
(discriminator) and ElectraForMaskedLM (generator):
  python -m bert.convert runs/electra runs/electra_hf --to=hf

Not reproduced: the official masking keeps 15% of the chosen tokens and puts [MASK] in the rest,
where this pipeline (data.mask_rate's tokens) puts [MASK] in 80%, a random token in 10% and keeps
10%; the official data are segments of one or two runs of sentences, here rows packed across
documents (objective mlm's); the paper's vocabulary is BERT's uncased WordPiece (30,522), here
a SentencePiece model trained on the corpus unless data.tokenizer names one.
"""

import ml_collections

from configs import common
from util.errors import UserError

# name -> (layers, width, embedding width, generator size). Heads are width / 64 and the
# feed-forward width is 4 x width, as the official code derives them (training_utils.py). small,
# base and large are the paper's (Table 6: ELECTRA-Small's embeddings 128 wide and a generator
# 1/4 of its width; Base's 1/3; Large's 1/4). tiny and mini are ours: BERT's small shapes with
# ELECTRA-Small's embedding width (tiny: its own width) and generator fraction.
SIZES: dict[str, tuple[int, int, int, float]] = {
    "tiny": (2, 128, 128, 0.25),
    "mini": (4, 256, 128, 0.25),
    "small": (12, 256, 128, 0.25),
    "base": (12, 768, 768, 1 / 3),
    "large": (24, 1024, 1024, 0.25),
}
# recipe=paper, per size: (batch, steps, peak learning rate, sequence length, mask rate), the
# paper's Table 6 (Small: 128 x 1M steps at 5e-4 and sequence 128; Base: 256 x 766K at 2e-4
# and 512; Large: 2,048 x 400K at 2e-4 and 512 with 25% masking). tiny and mini take Small's.
PAPER_RUNS: dict[str, tuple[int, int, float, int, float]] = {
    "tiny": (128, 1_000_000, 5e-4, 128, 0.15),
    "mini": (128, 1_000_000, 5e-4, 128, 0.15),
    "small": (128, 1_000_000, 5e-4, 128, 0.15),
    "base": (256, 766_000, 2e-4, 512, 0.15),
    "large": (2048, 400_000, 2e-4, 512, 0.25),
}
# recipe=short, per size: (SentencePiece pieces, batch, steps, peak AdamW learning rate, sequence
# length), as configs/bert_base.py's SHORT_RUNS at sequence 128 with AdamW's rates (ours, none of
# them from the paper); docs/pretraining.md says which were measured.
SHORT_RUNS: dict[str, tuple[int, int, int, float, int]] = {
    "tiny": (4096, 32, 4000, 2e-3, 128),
    "mini": (8192, 64, 2000, 1e-3, 128),
    "small": (16384, 64, 5000, 1e-3, 128),
    "base": (32768, 128, 10000, 5e-4, 128),
    "large": (32768, 256, 10000, 3e-4, 128),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.pretrain_args(arg)
    size = str(args["size"])
    if size not in SIZES:
        raise UserError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    layers, width, embedding, generator = SIZES[size]
    model = common.encoder_config(int(args["vocab_size"]), layers, width, width // 64, 4 * width)
    model.embedding_size = embedding  # the shared embeddings' width (Table 6: Small's 128)
    config = common.pretrain_config(str(args["mode"]), model)
    config.objective = "electra"  # replaced-token detection beside a generator's masked LM
    config.electra = electra_section(generator)
    batch, steps, rate, length, mask_rate = PAPER_RUNS[size]
    config.max_seq_length = length  # Table 6's sequence length (Small 128, Base and Large 512)
    d = config.data
    d.mask_rate = mask_rate  # Table 6's mask percent (15; Large 25)
    # the official int((mask_prob + 0.005) x max_seq_length): 19 at 128
    d.max_predictions_per_seq = int((mask_rate + 0.005) * length)
    t = config.train
    t.batch_size = batch  # Table 6's batch size
    t.steps = steps  # Table 6's ELECTRA train steps
    t.learning_rate = rate  # Table 6's learning rate
    t.warmup_steps = 10_000  # Table 6's warm-up steps (linear decay after it, power 1, as BERT)
    t.optimizer = "adamw"  # the official AdamWeightDecayOptimizer (BERT's Adam, decay 0.01)
    t.eps = 1e-6  # Table 6's Adam epsilon (b1 0.9, b2 0.999, weight decay 0.01 and clipping
    # at global norm 1 are BERT's, as configs/common.py has them)
    if args["recipe"] == "short":
        common.short_run(config, *SHORT_RUNS[size])
        config.model.max_position_embeddings = config.max_seq_length  # no unused table rows
    return config


def electra_section(generator_size: float) -> ml_collections.ConfigDict:
    """`config.electra`: the objective's settings (bert/objectives/electra.py Options)."""
    e = ml_collections.ConfigDict()
    # the generator's width as a fraction of the discriminator's, in (0, 1] (Table 6's generator
    # size; the official generator_hidden_size): its hidden and feed-forward widths scale,
    # its heads keep the discriminator's 64 dimensions (at least one), its depth is the same
    e.generator_size = generator_size
    e.generator_weight = 1.0  # weight of the generator's MLM loss (the official gen_weight)
    e.discriminator_weight = 50.0  # weight of the replaced-token loss (the paper's lambda = 50)
    # replacements are sampled from softmax(logits / temperature) (the official temperature;
    # 1: the generator's own distribution)
    e.temperature = 1.0
    # never sample the original token, so every masked token is replaced (the official
    # disallow_correct, off in the paper)
    e.disallow_correct = False
    return e
