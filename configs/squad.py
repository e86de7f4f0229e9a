"""Question answering fine-tuning on SQuAD v1.1 or v2.0.

Usage:
  python main.py --config=configs/squad.py:version=2.0 --workdir=runs/squad2 \
      --config.init_from=path/to/checkpoint \
      --config.train_file=train-v2.0.json --config.predict_file=dev-v2.0.json

The arg after the colon takes `version` (1.1 or 2.0; default 1.1). 2.0 adds unanswerable
questions: the model answers "" when the [CLS] (null) score beats the best span by more than
`null_score_diff_threshold`. Exact match and F1 (the official script's rules) go to
workdir/eval_results.json and TensorBoard; predictions.json (qid -> answer, the file the SQuAD
evaluation takes), nbest_predictions.json and, for 2.0, null_odds.json to workdir/predictions/.
"""

import ml_collections

from configs import common
from util.errors import UserError


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"version": "1.1"})
    if args["version"] not in ("1.1", "2.0"):
        raise UserError(f"config arg version={args['version']!r} must be 1.1 or 2.0")
    config = ml_collections.ConfigDict()
    config.task = "squad"  # the job main.py runs
    common.finetune_common(config, max_seq_length=384)
    config.train_file = ""  # SQuAD training JSON (train-v1.1.json / train-v2.0.json)
    config.predict_file = ""  # SQuAD JSON to predict and, when it has answers, score
    config.version_2_with_negative = args["version"] == "2.0"  # unanswerable questions exist
    config.doc_stride = 128  # tokens each window moves over a long context
    config.max_query_length = 64  # questions are cut to this many tokens
    config.n_best_size = 20  # start and end positions tried per window
    config.max_answer_length = 30  # longest answer span, in tokens
    config.null_score_diff_threshold = 0.0  # v2.0: answer "" when null - best span exceeds it
    # BERT's recipe for SQuAD: batch 32, learning rate 3e-5, 2 epochs.
    config.train = common.finetune_train(batch_size=32, learning_rate=3e-5, epochs=2.0)
    return config
