"""Fine-tuning a text classifier (or regressor) on your own labelled files.

Usage:
  python main.py --config=configs/classify.py --workdir=runs/reviews \
      --config.train_file=reviews.csv --config.text_columns=review --config.label_column=label \
      --config.init_from=path/to/checkpoint

Files: CSV, TSV, JSONL or Parquet (by suffix, or `file_format`), local, gs:// or hf://, one
text or a pair per row, columns by header name or 0-based position. Without `eval_file` and
`test_file`, dev and test rows are a seeded sample of `train_file` (`dev_fraction`,
`test_fraction`, `split_seed`). With `init_from` empty the encoder starts from random weights of
`size` (the arg: tiny, mini, small, medium, base, large) with `tokenizer`: the baseline a
pre-trained model is measured against. Scores go to workdir/eval_results.json and TensorBoard;
each split's predictions to workdir/predictions/<split>.jsonl, with its confusion matrix
(single_label) in <split>_confusion.tsv.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"size": "base"})
    config = ml_collections.ConfigDict()
    config.task = "classify"  # the job main.py runs
    common.finetune_common(config, max_seq_length=128)
    config.model = common.finetune_or_random_model(str(args["size"]))  # random: the arg's size
    # train_file, eval_file, test_file (a test file without labels is predicted, not scored),
    # dev_fraction, test_fraction, split_seed
    common.user_files(config)
    # auto (from the suffix, .gz etc. after it), csv, tsv, jsonl or parquet
    config.file_format = "auto"
    config.header = True  # CSV/TSV files start with a line naming the columns
    # the text's column, or two comma-separated for a text pair: header names or 0-based positions
    config.text_columns = "text"
    # the label's column; multi_label: a column of class names joined by label_separator (or a
    # JSON/Parquet list), or several comma-separated 0/1 columns named by their class
    config.label_column = "label"
    # class names in class-id order, comma-separated; empty: the training rows' names, sorted
    # (numerically when all are integers)
    config.labels = ""
    # single_label (softmax, cross-entropy), multi_label (a sigmoid per class, binary
    # cross-entropy, a class predicted above threshold) or regression (one output, squared error)
    config.problem_type = "single_label"
    config.label_separator = "|"  # multi_label, one column: between the class names of a row
    config.threshold = 0.5  # multi_label: a class is predicted where its sigmoid is above this
    # BERT's recipe: batch 32, 3 epochs, learning rate picked from {5e-5, 3e-5, 2e-5}.
    config.train = common.finetune_train(batch_size=32, learning_rate=2e-5, epochs=3.0)
    return config
