"""Pre-training BERT (masked LM + next sentence prediction).

Usage: python main.py --config=configs/bert_base.py:size=mini --workdir=runs/mini
The arg after the colon takes `size` (tiny, mini, small, medium, base, large; default base) and
`vocab_size` (default 30522, the size of Google's uncased WordPiece vocabulary).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"size": "base", "vocab_size": 30522})
    config = ml_collections.ConfigDict()
    config.task = "pretrain"  # the job main.py runs
    config.seed = 0  # seeds parameter initialisation, dropout and data order
    config.model = common.model_config(str(args["size"]), int(args["vocab_size"]))
    return config
