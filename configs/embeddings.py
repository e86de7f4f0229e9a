"""Sentence-embedding training: a bi-encoder with sentence-transformers' losses.

Usage:
  python main.py --config=configs/embeddings.py --workdir=runs/emb \
      --config.init_from=sentence-transformers/all-MiniLM-L6-v2 \
      --config.train_file=stsbenchmark/sts-train.csv --config.train_format=stsbenchmark \
      --config.eval_file=stsbenchmark/sts-dev.csv

`init_from` is an HF directory, a Google TF checkpoint, a workdir of ours or a Hub model id.
The trained workdir is an encoder: evaluate or encode with configs/sts.py and
`--config.init_from=WORKDIR` (the checkpoints record its pooling, normalisation and length,
which that job and the sentence-transformers export pick up).
"""

import ml_collections

from configs import common
from configs import sts as sts_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    common.parse_arg(arg, {})
    config = ml_collections.ConfigDict()
    config.task = "embeddings"  # the job main.py runs
    common.finetune_common(config, max_seq_length=128)
    # training data: files or globs (local, gs://, hf://; comma-separated for several)
    config.train_file = ""
    # auto (by suffix: .tsv .csv .jsonl .parquet), tsv, csv, jsonl, parquet, stsbenchmark,
    # glue_stsb (scored pairs), squad (question/passage pairs, all but the last
    # retrieval.held_out_articles articles), text (a sentence a line, paired with itself: SimCSE
    # with loss mnrl, the two sides differing by their dropout draws)
    config.train_format = "auto"
    config.train_kind = "scored"  # pairs (anchor, positive), triplets (+ negative) or scored
    config.train_columns = ""  # the kind's columns by header name or 0-based position; "": default
    config.train_passage = "paragraph"  # squad: the passage is the paragraph or the answer sentence
    config.score_scale = 5.0  # scores divided by this (STS 0..5 -> 0..1, as sentence-transformers)
    config.eval_file = ""  # STS .csv / STS-B .tsv scored during and after training; empty: none
    # retrieval evaluation during and after training (a SQuAD file's held-out articles or a
    # BEIR-layout set; all empty: none), as configs/sts.py's mode=retrieval
    config.retrieval = sts_config.retrieval_config()
    # mnrl: multiple-negatives ranking (in-batch + hard negatives); cosent; cosine (MSE regression)
    config.loss = "cosent"
    config.scale = 20.0  # inverse temperature of mnrl and cosent (sentence-transformers' 20)
    config.symmetric = False  # mnrl: also rank each positive's anchor among all anchors
    config.matryoshka_dims = ()  # e.g. (384, 256, 128, 64): loss summed over prefixes; (): off
    config.matryoshka_weights = ()  # one weight per matryoshka dim; (): all 1
    # mean (over real tokens), cls or max; empty: the checkpoint's (a sentence-transformers
    # directory's Pooling module, a workdir's recorded one), else mean
    config.pooling = ""
    config.normalize = True  # L2-normalise the embeddings (the losses use cosines either way)
    # the cached loss (GradCache, as sentence-transformers' Cached... losses): the embeddings and
    # their gradient computed this many rows at a time, without activations kept, the loss over
    # the whole batch, so the batch (the negatives) is bounded by time, not memory; a multiple
    # of the devices dividing train.batch_size (with train.pack, each mini-batch packed into
    # rows of its own); 0: one pass
    config.mini_batch_size = 0
    # sentence-transformers' training_stsbenchmark recipe: batch 16, learning rate 2e-5, warm-up
    # 10%; AdamW as its trainer (Hugging Face Trainer) runs it: no weight decay, epsilon 1e-8.
    config.train = common.finetune_train(batch_size=16, learning_rate=2e-5, epochs=1.0)
    config.train.weight_decay = 0.0  # the Hugging Face Trainer's default
    config.train.eps = 1e-8  # the Hugging Face Trainer's Adam epsilon
    # random batches with their texts packed whole into shared rows that hold the longest text
    # (at least train.pack_length tokens; sides of very different lengths, text_bucket_ratio,
    # in rows of their own): one encoder pass per group of rows and one step shape; the same
    # loss and gradient as the batch unpacked (tests/test_packed_sides.py), faster
    # (BENCHMARKS.md)
    config.train.pack = True
    config.train.group_by_length = 0  # packing takes random batches
    # no text twice in a batch, across its sides (sentence-transformers' no-duplicates batch
    # sampler): a paragraph repeated in a batch of question/paragraph pairs is a false negative
    # of the ranking loss; seeded and resumable; an epoch may end a few steps early
    config.train.no_duplicates = False
    return config
