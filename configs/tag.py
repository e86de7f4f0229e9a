"""Fine-tuning a token tagger (named entities or any other tag set) on your own tagged files.

Usage:
  python main.py --config=configs/tag.py --workdir=runs/msra \
      --config.train_file=msra/train.txt --config.init_from=path/to/checkpoint

Files: CoNLL-style columns (one token per line, its tag in `tag_column`, a blank line between
sentences; MSRA's one character per line is this layout) or JSON Lines (`tokens`: a list, or a
string read as its characters for text written without spaces; `tags`: one per token), local,
gs:// or hf://. Tags in IOB1, IOB2 or IOBES (`tag_scheme`, checked line by line); entities are
scored by conlleval's rules for any entity types. Without `eval_file` and `test_file`, dev and
test sentences are a seeded sample of `train_file`. With `init_from` empty the encoder starts from
random weights of `size` (the arg) with `tokenizer`. Scores go to workdir/eval_results.json and
TensorBoard; `token gold predicted` columns (conlleval's input) to workdir/predictions/<split>.txt.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"size": "base"})
    config = ml_collections.ConfigDict()
    config.task = "tag"  # the job main.py runs
    common.finetune_common(config, max_seq_length=128)
    config.model = common.finetune_or_random_model(str(args["size"]))  # random: the arg's size
    # train_file, eval_file, test_file (CoNLL columns or JSONL, tagged), dev_fraction,
    # test_fraction, split_seed
    common.user_files(config)
    config.file_format = "auto"  # auto (.jsonl: jsonl, any other name: conll), conll or jsonl
    # conll: the tag's column, counted from 0 (the token); -1: the last (CoNLL-2003, MSRA)
    config.tag_column = -1
    config.tokens_field = "tokens"  # jsonl: the tokens (a list, or a string of characters)
    config.tags_field = "tags"  # jsonl: their tags
    # iob1, iob2 or iobes: what the files must follow (a tag out of place stops with its line)
    config.tag_scheme = "iob2"
    # a tag out of tag_scheme's place: stop (naming its line) or repair (iob1, iob2: an entity
    # started with the other prefix, as MSRA's six `O I-PER` ones, is read as conlleval reads
    # it, and one warning counts them)
    config.tag_errors = "stop"
    config.labels = ()  # tag set; empty: the tags of the training file, O first
    # sub-tokens between the starts of the overlapping windows that evaluation cuts a sentence
    # longer than max_seq_length - 2 into (0: half of that); each token is scored in the window
    # where it has the most context
    config.window_stride = 0
    config.train = common.finetune_train(batch_size=32, learning_rate=5e-5, epochs=3.0)
    # random batches packed into rows (train.pack_length): the speed of grouping by length
    # without its cost in F1 (BENCHMARKS.md)
    config.train.pack = True
    config.train.group_by_length = 0
    return config
