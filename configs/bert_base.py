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
    defaults = {"size": "base", "recipe": "paper", "phase": 1, "vocab_size": 0, "mode": "train"}
    args = common.parse_arg(arg, defaults)
    if args["recipe"] not in ("paper", "short"):
        raise UserError(f"config arg recipe={args['recipe']!r} must be paper or short")
    if args["recipe"] == "short" and args["phase"] != 1:
        raise UserError("config arg recipe=short has one phase: leave phase out")
    if args["mode"] not in ("train", "evaluate"):
        raise UserError(f"config arg mode={args['mode']!r} must be train or evaluate")
    if args["phase"] not in (1, 2):
        raise UserError(f"config arg phase={args['phase']} must be 1 or 2")
    phase2 = args["phase"] == 2
    config = ml_collections.ConfigDict()
    config.task = "pretrain"  # the job main.py runs
    config.mode = args["mode"]  # train; or evaluate: init_from on data.input, no training
    config.seed = 0  # seeds parameter initialisation, dropout, data order and masking
    # start parameters: a workdir of ours, an HF or Google TF checkpoint, or a Hub model id
    config.init_from = ""  # (org/name[@revision]); empty: random initialisation
    config.max_seq_length = 512 if phase2 else 128  # tokens per sequence, [CLS]/[SEP]s included
    config.model = common.model_config(str(args["size"]), int(args["vocab_size"]))
    config.mesh = (-1, 1, 1)  # devices along (data, fsdp, tensor); one -1 takes the rest
    # what the model learns (bert/objectives/): mlm_nsp (BERT's masked LM + next sentence
    # prediction on sentence pairs) or mlm (masked LM alone on whole sentences packed into rows)
    config.objective = "mlm_nsp"

    d = config.data = ml_collections.ConfigDict()
    # comma-separated globs of raw text files: local, or hf:// for Hub files; empty: the TFDS
    # data set below. Default: English Wikipedia as parquet on the Hugging Face Hub.
    d.input = "hf://datasets/wikimedia/wikipedia/20231101.en/train-*.parquet"
    d.format = "parquet"  # text (sentence per line), paragraphs, jsonl, wikiextractor or parquet
    d.text_field = "text"  # the field (jsonl) or string column (parquet) holding the text
    d.tfds_name = "wikipedia/20230601.en"  # TFDS text data set used when data.input is empty
    d.tfds_split = "train"  # its split
    d.tfds_field = "text"  # its text feature
    # vocab.txt, tokenizer.json, SentencePiece .model, a folder with one, or a Hub model id
    d.tokenizer = ""  # (org/name[@revision]: its tokenizer files); empty: train SentencePiece
    d.sentencepiece_vocab_size = 32768  # vocabulary of the trained SentencePiece model
    d.sentencepiece_model_type = "unigram"  # unigram or bpe
    d.num_shards = 64  # record shards written by preparation
    # check of prepared shards on every start: checksum (sizes and CRC-32Cs; reads the shards
    # locally, free on gs://) or size; a damaged shard is rewritten alone (docs/pretraining.md)
    d.verify = "checksum"
    d.eval_shards = 1  # the last shards, held out for evaluation (or eval_input's shards)
    d.eval_input = ""  # globs of a separate held-out corpus (data.format); empty: eval_shards
    d.max_predictions_per_seq = 80 if phase2 else 20  # masked positions per sequence, at most
    d.mask_rate = 0.15  # fraction of tokens selected for prediction
    d.whole_word_masking = False  # select whole words (all their WordPiece/SentencePiece parts)
    d.short_seq_prob = 0.1  # chance of a shorter target length (BERT's short_seq_prob)
    d.nsp_random_prob = 0.5  # chance that segment B comes from another document

    t = config.train = ml_collections.ConfigDict()
    t.batch_size = 256  # global batch (sequences per optimizer step, all hosts together)
    t.accumulation_steps = 1  # micro-batches per step (batch_size must divide evenly)
    t.steps = 100_000 if phase2 else 900_000  # optimizer steps (BERT: 90% at 128, 10% at 512)
    t.warmup_steps = 1_000 if phase2 else 10_000  # linear warm-up steps
    t.warmup_proportion = 0.0  # fraction of the steps in linear warm-up; >0 replaces warmup_steps
    t.optimizer = "lamb"  # lamb or adamw
    t.learning_rate = 1e-3  # peak learning rate (LAMB at batch 256)
    t.end_learning_rate = 0.0  # learning rate at the last step
    t.decay_power = 1.0  # polynomial decay power after warm-up (1: linear, BERT's schedule)
    t.weight_decay = 0.01  # decoupled weight decay, not applied to biases and LayerNorm
    t.b1 = 0.9  # first-moment decay
    t.b2 = 0.999  # second-moment decay
    t.eps = 1e-6  # Adam/LAMB epsilon
    t.clip_norm = 1.0  # global gradient-norm clipping; 0 disables
    t.log_every = 100  # steps between metric reports
    t.eval_every = 10_000  # steps between evaluations on the held-out shards
    t.eval_batches = 50  # batches per evaluation
    t.checkpoint_every = 10_000  # steps between checkpoints
    t.max_to_keep = 3  # checkpoints kept
    t.async_checkpoints = True  # save in the background while training goes on
    # threads compiling the train and evaluation steps in the background (the train step while
    # the input pipeline starts); 0: each compiles when first needed
    t.compile_ahead_threads = 1
    t.peak_flops_per_device = 0.0  # for MFU; 0: look the device up in bert/flops.py
    if args["recipe"] == "short":
        _short_run(config, str(args["size"]))
    return config


def _short_run(config: ml_collections.ConfigDict, size: str) -> None:
    """Sets the fields of the size's short run (SHORT_RUNS); any can still be set by a flag."""
    pieces, batch, steps, learning_rate, seq_length = SHORT_RUNS[size]
    config.max_seq_length = seq_length
    config.model.max_position_embeddings = seq_length
    config.data.sentencepiece_vocab_size = pieces
    config.data.sentencepiece_model_type = "bpe"
    config.data.max_predictions_per_seq = round(seq_length * config.data.mask_rate)
    config.data.num_shards = 8  # a small corpus still fills every shard
    t = config.train
    t.batch_size, t.steps, t.learning_rate = batch, steps, learning_rate
    t.warmup_steps, t.warmup_proportion = 0, 0.05
    t.log_every = steps // 40
    t.eval_every = steps // 10
    t.eval_batches = 20
    t.checkpoint_every = steps // 5
