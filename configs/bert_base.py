"""Pre-training BERT (masked LM + next sentence prediction, or another `config.objective`).

Usage:
  python main.py --config=configs/bert_base.py --workdir=runs/base
  python main.py --config=configs/bert_base.py:size=mini,phase=2 --workdir=runs/mini2 \
      --config.init_from=runs/mini

The arg after the colon takes `size` (tiny, mini, small, medium, base, large; default base),
`phase` (1: sequence 128; 2: sequence 512 continuing from a phase-1 run, as in BERT and
NVIDIA's recipe), `vocab_size` (0: take it from the tokenizer) and `mode` (train; or evaluate:
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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"size": "base", "phase": 1, "vocab_size": 0, "mode": "train"})
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
    return config
