"""Shared config pieces: the model size table, the `configs/x.py:key=value,...` arg parser, the
pre-training configs' sections (configs/bert_base.py, configs/modernbert.py) and the fine-tuning
jobs' fields."""

import ml_collections

from util.errors import UserError

# name -> (layers, hidden width). Heads are width / 64 and the feed-forward width is 4x width,
# as in the BERT paper and Google's 24 smaller BERT models (Turc et al., 2019).
SIZES: dict[str, tuple[int, int]] = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}


def parse_arg(arg: str | None, defaults: dict[str, object]) -> dict[str, object]:
    """Parses the text after the colon in `--config=configs/x.py:size=mini,steps=100`.

    Args:
      arg: comma-separated `key=value` pairs (or None / "" for no overrides).
      defaults: the accepted keys with their default values; a value is converted to the type
        of its default.

    Returns:
      `defaults` updated with the parsed values.

    Raises:
      ValueError: naming an unknown key, a pair without `=`, or a value of the wrong type.
    """
    values = dict(defaults)
    for item in (arg or "").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise UserError(f"config arg {item!r} is not of the form key=value (in {arg!r})")
        key, text = (part.strip() for part in item.split("=", 1))
        if key not in defaults:
            raise UserError(f"unknown config arg {key!r}; known: {', '.join(sorted(defaults))}")
        kind = type(defaults[key])
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise UserError(text)
                values[key] = text.lower() in ("true", "1")
            else:
                values[key] = kind(text)
        except ValueError:
            raise UserError(f"config arg {key}={text!r} is not a valid {kind.__name__}") from None
    return values


def model_config(size: str, vocab_size: int) -> ml_collections.ConfigDict:
    """The `config.model` section for a named size; every field commented.

    Args:
      size: one of SIZES.
      vocab_size: number of token ids (the tokenizer's vocabulary size).
    """
    if size not in SIZES:
        raise UserError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    layers, width = SIZES[size]
    return encoder_config(vocab_size, layers, width, width // 64, 4 * width)


def encoder_config(
    vocab_size: int, layers: int, width: int, heads: int, intermediate: int
) -> ml_collections.ConfigDict:
    """A `config.model` section of these sizes with BERT's other values, every field commented
    (a config of another architecture then sets what differs, with its own comments)."""
    m = ml_collections.ConfigDict()
    # token ids; 0: the tokenizer's vocabulary size; larger: a padded table (continuing from
    # ModernBERT: 50,368 rows for its 50,280 pieces)
    m.vocab_size = vocab_size
    m.hidden_size = width  # width of the residual stream
    m.embedding_size = 0  # the embeddings' width (ELECTRA's); 0: hidden_size, else projected to it
    m.num_layers = layers  # transformer layers
    m.num_heads = heads  # attention heads of 64 dimensions each
    m.intermediate_size = intermediate  # feed-forward inner width
    m.max_position_embeddings = 512  # longest sequence the position table covers
    m.type_vocab_size = 2  # segment (token type) ids: sentence A / sentence B
    m.hidden_act = "gelu"  # feed-forward activation: gelu (exact), gelu_new (tanh), relu, silu
    m.hidden_dropout = 0.1  # dropout on embeddings and every residual branch
    m.attention_dropout = 0.1  # dropout on attention probabilities (xla implementation only)
    m.layer_norm_eps = 1e-12  # LayerNorm epsilon, as in the original BERT
    m.initializer_range = 0.02  # standard deviation of new weights
    # truncated_normal (cut at 2 standard deviations, as Google's BERT) or normal (as HF)
    m.initializer = "truncated_normal"
    m.dtype = "auto"  # compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU (LN, logits: f32)
    m.param_dtype = "float32"  # parameter (master weight) dtype
    # the attention kernel (bert/attention.py): auto (cuDNN's fused attention on a GPU where it
    # computes the layer, chunked on a CPU, XLA's elsewhere), xla, chunked, or cudnn
    m.attention_impl = "auto"
    # one nn.scan over the layers (one compiled layer body: faster compiles of deep models; same
    # numbers, parameters stacked in one "layers" subtree, converted on import and export)
    m.scan_layers = False
    # recompute each layer in the backward pass to save memory: none, full (keep nothing) or
    # dots (keep the matrix products); the numbers do not change
    m.remat = "none"
    return m


# The arg of a pre-training config (configs/bert_base.py, configs/modernbert.py): its keys with
# their defaults (each config adds its own), and the recipes.
PRETRAIN_ARGS: dict[str, object] = {"size": "base", "recipe": "paper", "vocab_size": 0,
                                    "mode": "train"}  # fmt: skip
RECIPES = ("paper", "short")


def pretrain_args(arg: str | None, **extra: object) -> dict[str, object]:
    """parse_arg of a pre-training config's arg (PRETRAIN_ARGS and `extra`), with its recipe and
    mode checked."""
    args = parse_arg(arg, {**PRETRAIN_ARGS, **extra})
    if args["recipe"] not in RECIPES:
        raise UserError(f"config arg recipe={args['recipe']!r} must be paper or short")
    if args["mode"] not in ("train", "evaluate"):
        raise UserError(f"config arg mode={args['mode']!r} must be train or evaluate")
    return args


def pretrain_config(mode: str, model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A pre-training config (task "pretrain", bert/jobs/pretrain.py) with BERT's phase-1 values:
    each config file then sets what its recipe changes, with a comment."""
    config = ml_collections.ConfigDict()
    config.task = "pretrain"  # the job main.py runs
    config.mode = mode  # train; or evaluate: init_from on data.input, no training
    config.seed = 0  # seeds parameter initialisation, dropout, data order and masking
    # start parameters: a workdir of ours, an HF or Google TF checkpoint, or a Hub model id
    config.init_from = ""  # (org/name[@revision]); empty: random initialisation
    config.max_seq_length = 128  # tokens per sequence, [CLS]/[SEP]s included
    config.model = model
    config.mesh = (-1, 1, 1)  # devices along (data, fsdp, tensor); one -1 takes the rest
    # what the model learns (bert/objectives/): mlm_nsp (BERT's masked LM + next sentence
    # prediction on sentence pairs), mlm (masked LM alone on whole sentences packed into rows) or
    # electra (replaced-token detection beside a small generator on packed rows, configs/electra.py)
    config.objective = "mlm_nsp"
    config.data = _pretrain_data()
    config.train = _pretrain_train()
    config.downstream = _pretrain_downstream()
    return config


def _pretrain_downstream() -> ml_collections.ConfigDict:
    """Downstream probes (bert/jobs/downstream.py): short fine-tunes of the encoder being
    pre-trained, scored beside the held-out MLM figures."""
    d = ml_collections.ConfigDict()
    # steps between probes, a multiple of train.eval_every (probes run with that evaluation,
    # also at step 0, the random initialisation's scores, and at the last step); 0: no probes
    d.every = 0
    # which: sst2 (the GLUE job, dev accuracy), stsb (a CoSENT bi-encoder on STS benchmark
    # train through the embeddings job, dev Spearman); comma-separated
    d.tasks = "sst2,stsb"
    d.sst2_dir = ""  # GLUE's SST-2 folder (train.tsv, dev.tsv); empty: TFDS glue/sst2
    d.stsb_train = ""  # STS benchmark sts-train.csv or GLUE STS-B train.tsv (stsb needs it)
    d.stsb_dev = ""  # STS benchmark sts-dev.csv or GLUE STS-B dev.tsv (stsb needs it)
    d.train_limit = 2000  # training examples of each probe (the first N); 0: all
    d.eval_limit = 0  # dev examples scored (the first N); 0: all (SST-2 872, STS-B 1,500)
    d.steps = 200  # fine-tuning steps of each probe (AdamW, 10% warm-up, linear decay)
    d.batch_size = 32  # fine-tuning batch
    # peak fine-tuning learning rate: higher than BERT's 2e-5, which a model early in
    # pre-training (or random) barely moves from in 200 steps
    d.learning_rate = 1e-4
    d.max_seq_length = 64  # tokens per text (SST-2's sentences and STS's fit)
    d.seed = 0  # seeds the probes' heads, dropout and data order (the same at every step)
    return d


def _pretrain_data() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    # comma-separated globs of raw text files: local, or hf:// for Hub files; empty: the TFDS
    # data set below. Default: English Wikipedia as parquet on the Hugging Face Hub.
    d.input = "hf://datasets/wikimedia/wikipedia/20231101.en/train-*.parquet"
    d.format = "parquet"  # text (a sentence a line), paragraphs, jsonl, wikiextractor, parquet, csv
    d.text_field = "text"  # the field (jsonl) or column (parquet, csv) holding the text
    d.tfds_name = "wikipedia/20230601.en"  # TFDS text data set used when data.input is empty
    d.tfds_split = "train"  # its split
    d.tfds_field = "text"  # its text feature
    # vocab.txt, tokenizer.json, SentencePiece .model, a folder with one, or a Hub model id
    d.tokenizer = ""  # (org/name[@revision]: its tokenizer files); empty: train SentencePiece
    d.sentencepiece_vocab_size = 32768  # vocabulary of the trained SentencePiece model
    d.sentencepiece_model_type = "unigram"  # unigram or bpe
    # train it uncased (SentencePiece's nmt_nfkc_cf rule, case folding stored in the .model, so
    # encoding and the exported tokenizer fold case too): SST-2's and most GLUE text is
    # lower-cased, and a cased vocabulary spends pieces on capitals the tasks never show
    d.sentencepiece_lowercase = False
    d.num_shards = 64  # record shards written by preparation
    # check of prepared shards on every start: checksum (sizes and CRC-32Cs; reads the shards
    # locally, free on gs://) or size; a damaged shard is rewritten alone (docs/pretraining.md)
    d.verify = "checksum"
    d.eval_shards = 1  # the last shards, held out for evaluation (or eval_input's shards)
    d.eval_input = ""  # globs of a separate held-out corpus (data.format); empty: eval_shards
    d.max_predictions_per_seq = 20  # masked positions per sequence, at most
    d.mask_rate = 0.15  # fraction of tokens selected for prediction
    d.whole_word_masking = False  # select whole words (all their WordPiece/SentencePiece parts)
    # words for whole_word_masking from a segmenter, for text without spaces: "jieba" (Chinese,
    # as the Chinese-BERT-wwm models: all characters of a word masked together); "": the
    # tokenizer's own word starts. Part of the prepared data (changing it prepares again)
    d.word_segmenter = ""
    d.short_seq_prob = 0.1  # chance of a shorter target length (BERT's short_seq_prob)
    d.nsp_random_prob = 0.5  # chance that segment B comes from another document
    # objective mlm's packed rows: row (the row attends as one sequence, across documents) or
    # document (each document's part attends only to itself, its positions from 0)
    d.pack_attention = "row"
    return d


def _pretrain_train() -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    t.batch_size = 256  # global batch (sequences per optimizer step, all hosts together)
    t.accumulation_steps = 1  # micro-batches per step (batch_size must divide evenly)
    t.steps = 900_000  # optimizer steps (BERT: 90% at 128, 10% at 512)
    # a budget of training time in seconds, as academic-budget-bert's: the run ends (checkpoint,
    # evaluation) when its training loop's time, summed over resumes (start-up and held-out
    # evaluations not counted), reaches it, and the learning-rate schedule below runs on the
    # budget's elapsed fraction instead of step / steps (steps then only bounds the run); 0: off
    t.max_wall_clock = 0.0
    t.warmup_steps = 10_000  # linear warm-up steps
    t.warmup_proportion = 0.0  # fraction of the steps in linear warm-up; >0 replaces warmup_steps
    t.optimizer = "lamb"  # lamb or adamw
    t.learning_rate = 1e-3  # peak learning rate (LAMB at batch 256)
    t.end_learning_rate = 0.0  # learning rate at the last step
    # after the warm-up: linear (polynomial decay to end_learning_rate, BERT's) or wsd
    # (warmup-stable-decay: the peak held, then the last decay_proportion of the steps decay)
    t.schedule = "linear"
    t.decay_power = 1.0  # linear schedule: polynomial decay power (1: linear, BERT's schedule)
    t.decay_proportion = 0.2  # wsd: fraction of the steps in the final decay
    t.decay_shape = "1-sqrt"  # wsd: the decay's shape, linear or 1-sqrt (Hagele et al. 2024)
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
    return t


def short_run(
    config: ml_collections.ConfigDict,
    pieces: int,
    batch: int,
    steps: int,
    learning_rate: float,
    seq_length: int,
) -> None:
    """Sets the fields of a recipe=short run (a row of a config's SHORT_RUNS) on one machine: a
    SentencePiece BPE vocabulary of `pieces` trained on the corpus, warm-up over the first 5% of
    the steps, evaluation every 10% and a checkpoint every 20%, 8 shards (so that a corpus of a
    few megabytes fills them). Any field can still be set by a flag."""
    config.max_seq_length = seq_length
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


def finetune_model() -> ml_collections.ConfigDict:
    """`config.model` of a fine-tuning job: what may differ from the checkpoint's own config
    (the sizes always come from the checkpoint)."""
    m = ml_collections.ConfigDict()
    m.dtype = "auto"  # compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU
    # the attention kernel: auto (cuDNN's fused attention on a GPU where it computes the layer,
    # chunked on a CPU, XLA's elsewhere), xla, chunked, or cudnn (GPU; attention_dropout 0)
    m.attention_impl = "auto"
    m.hidden_dropout = 0.1  # dropout on embeddings, residual branches and the task head
    m.attention_dropout = 0.1  # dropout on attention probabilities
    # the task head's new weights: normal (as HF transformers) or truncated_normal (cut at 2
    # standard deviations, as Google's BERT; its smaller draws left the NER tagger behind after a
    # short schedule); standard deviation model.initializer_range
    m.initializer = "normal"
    # one nn.scan over the layers (one compiled layer body: faster compiles of deep models; the
    # same numbers without dropout, which draws per-layer keys under scan): the checkpoint's
    # parameters, of either layout, are stacked on load and unstacked on export
    m.scan_layers = False
    # recompute each layer in the backward pass to save memory: none, full (keep nothing) or
    # dots (keep the matrix products); the numbers do not change
    m.remat = "none"
    return m


def finetune_or_random_model(size: str) -> ml_collections.ConfigDict:
    """`config.model` of a fine-tuning job that may start from random weights (classify, tag):
    with init_from empty, the whole encoder of `size`, each field as `encoder_config` comments
    it; with a checkpoint, its own sizes and only `finetune_model`'s fields from here."""
    m = model_config(size, vocab_size=0)
    m.initializer = finetune_model().initializer  # the head's new weights, as HF draws them
    return m


def user_files(config: ml_collections.ConfigDict) -> None:
    """The fields of a job on the user's own files (classify, tag), added to `config`."""
    config.train_file = ""  # files or comma-separated globs, local, gs:// or hf://
    config.eval_file = ""  # the dev file(s); empty: dev_fraction of train_file held out
    config.test_file = ""  # the test file(s); empty: test_fraction of train_file held out
    config.dev_fraction = 0.1  # with eval_file empty: the share of train_file's rows held out
    config.test_fraction = 0.0  # with test_file empty: the share of train_file's rows held out
    config.split_seed = 0  # seeds which rows (sentences) are held out: the same in every run


def finetune_train(
    batch_size: int, learning_rate: float, epochs: float
) -> ml_collections.ConfigDict:
    """`config.train` of a fine-tuning job (AdamW, warm-up then linear decay, as BERT)."""
    t = ml_collections.ConfigDict()
    t.batch_size = batch_size  # global batch (sequences per optimizer step, all hosts together)
    t.accumulation_steps = 1  # micro-batches per step (batch_size must divide evenly)
    t.epochs = epochs  # passes over the training set (whole batches only)
    t.steps = 0  # optimizer steps; >0 overrides epochs
    # this many batches of the seeded permutation are sorted by length together, then the epoch's
    # batches are shuffled: a batch holds rows of similar lengths, so its length bucket
    # (pad_to_multiple_of) is short; 0: plain random batches (slower; better F1 on a short NER
    # schedule)
    t.group_by_length = 50
    # pack each batch's rows whole into rows of pack_length tokens (a per-token task, ner; a
    # bi-encoder's texts of every side, embeddings), so random batches carry almost no padding;
    # needs group_by_length 0
    t.pack = False
    # tokens per packed row (at most max_seq_length); a batch packs into the rows an average
    # batch needs, and into a longer length bucket's rows where it does not fit
    t.pack_length = 64
    t.warmup_proportion = 0.1  # fraction of the steps spent in linear warm-up
    t.optimizer = "adamw"  # adamw (BERT's fine-tuning optimizer) or lamb
    t.learning_rate = learning_rate  # peak learning rate, decayed linearly to 0
    t.weight_decay = 0.01  # decoupled weight decay, not applied to biases and LayerNorm
    t.b1 = 0.9  # first-moment decay
    t.b2 = 0.999  # second-moment decay
    t.eps = 1e-6  # Adam epsilon (BERT's value)
    t.clip_norm = 1.0  # global gradient-norm clipping; 0 disables
    t.log_every = 50  # steps between training-metric reports
    t.eval_every = 0  # steps between evaluations during training; 0: only at the end
    t.checkpoint_every = 1000  # steps between checkpoints (and one at the end)
    t.max_to_keep = 1  # checkpoints kept
    t.async_checkpoints = True  # save in the background while training goes on
    # threads compiling the steps of the run's length buckets (training and evaluation) in the
    # background while earlier steps run; 0: each shape compiles when first needed
    t.compile_ahead_threads = 1
    return t


def finetune_common(config: ml_collections.ConfigDict, max_seq_length: int) -> None:
    """Fields every fine-tuning job has, added to `config`."""
    config.seed = 0  # seeds the head's initialisation, dropout and the data order
    # checkpoint: a workdir of ours, an HF or Google TF directory, or a Hub model id org/name[@rev]
    config.init_from = ""
    # tokenizer file or folder, or a Hub model id; empty: the one beside the checkpoint
    config.tokenizer = ""
    config.max_seq_length = max_seq_length  # tokens per sequence, special tokens included
    # each batch is padded to the smallest length bucket that holds its longest row: this times
    # 1, 2, 3, 4, 6, 8, 12, 16, ... (at most max_seq_length; bert/finetuning/buckets.py).
    # One compiled shape per bucket, little work on padding; 0: every batch at max_seq_length
    config.pad_to_multiple_of = 8
    # a model taking several texts (a bi-encoder's sides) pads each to its own bucket (packed:
    # into rows of its own) when one's mean length is at least this many times another's (query
    # and passage); else they share one
    config.text_bucket_ratio = 1.5
    config.train_limit = 0  # use only N training examples (limit_by picks which); 0: all
    config.eval_limit = 0  # evaluate only N examples of each split (limit_by picks which); 0: all
    # which examples the limits keep: first (the first N, as the files order them) or random (a
    # sample drawn with config.seed; files sorted by genre or topic give a skewed first N)
    config.limit_by = "first"
    config.eval_batch_size = 64  # sequences per prediction batch (all hosts together)
    config.mesh = (-1, 1, 1)  # devices along (data, fsdp, tensor); one -1 takes the rest
    config.model = finetune_model()
