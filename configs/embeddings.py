"""Sentence-embedding training: a bi-encoder with sentence-transformers' losses.

Usage:
  python main.py --config=configs/embeddings.py --workdir=runs/emb \
      --config.init_from=sentence-transformers/all-MiniLM-L6-v2 \
      --config.train_file=stsbenchmark/sts-train.csv --config.eval_file=stsbenchmark/sts-dev.csv

`init_from` is an HF directory, a Google TF checkpoint, a workdir of ours or a Hub model id.
The trained workdir is an encoder: evaluate or encode with configs/sts.py and
`--config.init_from=WORKDIR` (with the same pooling).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    common.parse_arg(arg, {})
    config = ml_collections.ConfigDict()
    config.task = "embeddings"  # the job main.py runs
    common.finetune_common(config, max_seq_length=128)
    config.train_file = ""  # training data (STS benchmark .csv: scored pairs)
    config.train_format = "stsbenchmark"  # layout of train_file: stsbenchmark (scored pairs)
    config.score_scale = 5.0  # scores divided by this (STS 0..5 -> 0..1, as sentence-transformers)
    config.eval_file = ""  # STS .csv / STS-B .tsv scored during and after training; empty: none
    # mnrl: multiple-negatives ranking (in-batch + hard negatives); cosent; cosine (MSE regression)
    config.loss = "cosent"
    config.scale = 20.0  # inverse temperature of mnrl and cosent (sentence-transformers' 20)
    config.symmetric = False  # mnrl: also rank each positive's anchor among all anchors
    config.matryoshka_dims = ()  # e.g. (384, 256, 128, 64): loss summed over prefixes; (): off
    config.matryoshka_weights = ()  # one weight per matryoshka dim; (): all 1
    config.pooling = "mean"  # mean (over real tokens) or cls
    config.normalize = True  # L2-normalise the embeddings (the losses use cosines either way)
    # sentence-transformers' training_stsbenchmark recipe: batch 16, learning rate 2e-5, warm-up
    # 10%; AdamW as its trainer (Hugging Face Trainer) runs it: no weight decay, epsilon 1e-8.
    config.train = common.finetune_train(batch_size=16, learning_rate=2e-5, epochs=1.0)
    config.train.weight_decay = 0.0  # the Hugging Face Trainer's default
    config.train.eps = 1e-8  # the Hugging Face Trainer's Adam epsilon
    return config
