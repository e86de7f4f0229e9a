"""Sentence embeddings: evaluate on STS, or encode a text file to a .npy matrix.

Usage:
  python main.py --config=configs/sts.py --workdir=runs/sts \
      --config.init_from=path/to/checkpoint --config.eval_file=stsbenchmark/sts-dev.csv
  python main.py --config=configs/sts.py:mode=encode --workdir=runs/emb \
      --config.init_from=path/to/checkpoint --config.encode_input=sentences.txt

The arg after the colon takes `mode` (evaluate or encode; default evaluate).
"""

import ml_collections

from configs import common
from input_pipeline.errors import UserError


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"mode": "evaluate"})
    if args["mode"] not in ("evaluate", "encode"):
        raise UserError(f"config arg mode={args['mode']!r} must be evaluate or encode")
    config = ml_collections.ConfigDict()
    config.task = "sts"  # the job main.py runs
    config.mode = args["mode"]  # evaluate: Spearman/Pearson on STS; encode: text file -> .npy
    # checkpoint: a workdir of ours, an HF or Google TF directory, or a Hub model id org/name[@rev]
    config.init_from = ""
    # tokenizer file or folder, or a Hub model id; empty: the one beside the checkpoint
    config.tokenizer = ""
    config.eval_file = ""  # STS benchmark .csv (tab-separated) or GLUE STS-B .tsv with scores
    config.encode_input = ""  # text file, one sentence per line (mode=encode)
    config.encode_output = "embeddings.npy"  # .npy written in the workdir (mode=encode)
    # mean (over real tokens), cls or max; empty: the checkpoint's (a sentence-transformers
    # directory's Pooling module, a workdir's recorded one), else mean
    config.pooling = ""
    # L2-normalise the embeddings (mode=encode); unset (None): the checkpoint's (a Normalize
    # module, a workdir's recorded one), else True; --config.normalize=false sets it
    config.normalize = ml_collections.config_dict.placeholder(bool)
    config.max_seq_length = 256  # tokens per sentence, [CLS] and [SEP] included
    config.eval_batch_size = 64  # sentences per forward pass
    # sentences go by length, each batch padded to a multiple of this (few compiled shapes)
    config.pad_to_multiple_of = 16
    return config
