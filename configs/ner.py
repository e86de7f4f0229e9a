"""Named-entity recognition fine-tuning on CoNLL-2003 (or any file in its column format).

Usage:
  python main.py --config=configs/ner.py --workdir=runs/ner \
      --config.init_from=path/to/checkpoint --config.data_dir=conll2003

`data_dir` holds `<split>.txt` files: one `word ... TAG` line per token (the IOB2 tag in the
last column, or in `tag_column`), a blank line between sentences, `-DOCSTART-` lines ignored.
Entity-level precision/recall/F1 go to workdir/eval_results.json and TensorBoard; `word gold
predicted` columns (conlleval's input) to workdir/predictions/<split>.txt.
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
    # the column of the NER tag, counted from 0 (the word); -1: the last, as in CoNLL-2003
    # (word POS chunk NER) and MSRA (char<TAB>tag); e.g. 2 for `word POS NER chunk` files
    config.tag_column = -1
    # sub-tokens between the starts of the overlapping windows that evaluation cuts a sentence
    # longer than max_seq_length - 2 into (1 to max_seq_length - 2; 0: half of that); each word
    # is scored in the window where it has the most context, as SQuAD's doc_stride windows do
    config.window_stride = 0
    config.train = common.finetune_train(batch_size=32, learning_rate=5e-5, epochs=3.0)
    # random batches packed into rows (train.pack_length): the speed of grouping by length
    # without its cost in F1 (BENCHMARKS.md)
    config.train.pack = True
    config.train.group_by_length = 0
    return config
