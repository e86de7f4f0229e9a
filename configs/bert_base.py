"""Pre-training BERT (masked LM + next sentence prediction, or another `config.objective`).

Usage:
  python main.py --config=configs/bert_base.py --workdir=runs/base
  python main.py --config=configs/bert_base.py:size=mini,phase=2 --workdir=runs/mini2 \
      --config.init_from=runs/mini

The arg after the colon takes `size` (tiny, mini, small, medium, base, large; default base),
`recipe` (paper: BERT's schedule of 900,000 steps of batch 256 on a cluster, the default; short:
the size's run of minutes to hours on one machine, SHORT_RUNS below), `phase` (1: sequence 128;
2: sequence 512 continuing from a phase-1 run, as in BERT and NVIDIA's recipe), `vocab_size` (0:
take it from the tokenizer) and `mode` (train; or evaluate:
the MLM loss, accuracy and perplexity and the NSP accuracy of the checkpoint in `init_from` on
the corpus in `data.input`, without training:
  python main.py --config=configs/bert_base.py:mode=evaluate --workdir=runs/eval \
      --config.init_from=runs/mini --config.data.input='held_out/*.txt').

By default the text is English Wikipedia (20231101.en) read from the Hugging Face Hub's parquet
files, streamed into preparation without a local copy first. To train on local files instead
(and offline): --config.data.input='/data/*.txt' --config.data.format=text (or paragraphs,
jsonl, wikiextractor, parquet).
"""

import ml_collections

from configs import common
from util.errors import UserError

# recipe=short, per size: (SentencePiece pieces, batch, steps, peak LAMB learning rate, sequence
# length). A run a single machine finishes in minutes (tiny, mini on CPU cores) to hours (base,
# large on one accelerator), on a corpus of a few megabytes upwards; warm-up is the first 5% of
# the steps, evaluation every 10% and a checkpoint every 20%. SentencePiece is trained as BPE:
# with a small vocabulary the unigram model splits off suffixes ("s" becomes the most frequent
# piece), BPE keeps frequent words whole. docs/pretraining.md says which were measured.
SHORT_RUNS: dict[str, tuple[int, int, int, float, int]] = {
    "tiny": (4096, 32, 4000, 1e-2, 64),
    "mini": (8192, 64, 2000, 6e-3, 128),
    "small": (16384, 64, 5000, 4e-3, 128),
    "medium": (16384, 128, 5000, 3e-3, 128),
    "base": (32768, 128, 10000, 2e-3, 128),
    "large": (32768, 256, 10000, 1e-3, 128),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.pretrain_args(arg, phase=1)
    if args["recipe"] == "short" and args["phase"] != 1:
        raise UserError("config arg recipe=short has one phase: leave phase out")
    if args["phase"] not in (1, 2):
        raise UserError(f"config arg phase={args['phase']} must be 1 or 2")
    size = str(args["size"])
    # every field and its comment: configs/common.py (pretrain_config), BERT's phase 1
    model = common.model_config(size, int(args["vocab_size"]))
    config = common.pretrain_config(str(args["mode"]), model)
    if args["phase"] == 2:  # sequence 512 for BERT's last 10% of the steps, from a phase-1 run
        config.max_seq_length = 512  # tokens per sequence, [CLS]/[SEP]s included
        config.data.max_predictions_per_seq = 80  # masked positions per sequence, at most
        config.train.steps = 100_000  # optimizer steps (BERT: 90% at 128, 10% at 512)
        config.train.warmup_steps = 1_000  # linear warm-up steps
    if args["recipe"] == "short":
        common.short_run(config, *SHORT_RUNS[size])
        config.model.max_position_embeddings = config.max_seq_length  # no unused table rows
    return config
