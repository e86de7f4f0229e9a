"""Named-entity recognition fine-tuning on CoNLL-2003 (or any file in its column format).

Usage:
  python main.py --config=configs/ner.py --workdir=runs/ner \
      --config.init_from=path/to/checkpoint --config.data_dir=conll2003

`data_dir` holds `<split>.txt` files: one `word ... TAG` line per token (the tag in the last
column, IOB2), a blank line between sentences, `-DOCSTART-` lines ignored. Entity-level
precision/recall/F1 go to workdir/eval_results.json and TensorBoard; `word gold predicted`
columns (conlleval's input) to workdir/predictions/<split>.txt.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    common.parse_arg(arg, {})
    config = ml_collections.ConfigDict()
    config.task = "ner"  # the job main.py runs
    common.finetune_common(config, max_seq_length=128)
    config.data_dir = ""  # folder holding <split>.txt files in CoNLL-2003 columns
    config.train_split = "train"  # the file the model is trained on
    config.eval_splits = ("valid",)  # files scored (add "test" for the CoNLL test set)
    config.labels = ()  # tag set; empty: the tags of the training file, O first
    config.train = common.finetune_train(batch_size=32, learning_rate=5e-5, epochs=3.0)
    # random batches packed into rows (train.pack_length): the speed of grouping by length
    # without its cost in F1 (BENCHMARKS.md)
    config.train.pack = True
    config.train.group_by_length = 0
    return config
