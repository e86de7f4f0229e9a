"""The jobs' reading of their config: each config section the machinery needs, as the typed
value it takes. Jobs alone read config sections; what they call takes these values."""

from collections.abc import Callable, Sequence
from typing import TypeVar

import ml_collections
import numpy as np

from bert import pretrained
from bert.finetuning import finetune
from bert.model import BertConfig
from bert.training import reporting, runner
from input_pipeline import tokenizers
from util import hub
from util.errors import UserError

T = TypeVar("T")

# config.model fields of a fine-tuning job that may differ from the checkpoint's own model config
MODEL_OVERRIDES = ("dtype", "attention_impl", "hidden_dropout", "attention_dropout", "initializer",
                   "scan_layers", "remat")  # fmt: skip


def run_settings(config: ml_collections.ConfigDict) -> runner.Settings:
    """The run skeleton's settings: `config.seed`, config.train's loop fields, and the whole
    config as hyperparameters."""
    t = config.train
    return runner.Settings(
        seed=config.seed,
        batch_size=t.batch_size,
        accumulation_steps=t.accumulation_steps,
        log_every=t.log_every,
        eval_every=t.eval_every,
        checkpoint_every=t.checkpoint_every,
        max_to_keep=t.max_to_keep,
        async_checkpoints=t.async_checkpoints,
        compile_ahead_threads=t.compile_ahead_threads,
        hparams=reporting.flat_hparams(config),
    )


def finetuning(config: ml_collections.ConfigDict) -> finetune.Settings:
    """A fine-tuning job's run settings (configs/common.py's fine-tuning fields)."""
    t = config.train
    return finetune.Settings(
        run=run_settings(config),
        mesh=tuple(config.mesh),
        steps=t.steps,
        epochs=t.epochs,
        group_by_length=t.group_by_length,
        pack=t.pack,
        pack_length=t.pack_length,
        warmup_proportion=t.warmup_proportion,
        optimizer=t.optimizer,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        b1=t.b1,
        b2=t.b2,
        eps=t.eps,
        clip_norm=t.clip_norm,
        pad_to_multiple_of=config.pad_to_multiple_of,
        text_bucket_ratio=config.text_bucket_ratio,
        eval_batch_size=config.eval_batch_size,
    )


def encoder(
    config: ml_collections.ConfigDict, given: pretrained.Pretrained | None = None
) -> pretrained.Pretrained:
    """A fine-tuning job's encoder: `config.init_from` with its tokenizer (or config.tokenizer),
    or the encoder `given` in memory (a pre-training run's downstream probe), with config.model's
    overrides; with init_from empty, for a job whose config.model is a whole encoder's
    (classify, tag), a random one of it (`random_encoder`)."""
    overrides = {name: config.model[name] for name in MODEL_OVERRIDES}
    if given is not None:
        loaded = finetune.overridden(given, overrides)
    elif not config.init_from and "num_layers" in config.model:
        loaded = random_encoder(config)
    else:
        loaded = finetune.load_encoder(config.init_from, config.tokenizer, overrides)
    check_positions(config.max_seq_length, loaded)
    return loaded


def model_config(fields: ml_collections.ConfigDict, vocab_size: int) -> BertConfig:
    """The model config, with the vocabulary size taken from the tokenizer when it is 0; a
    larger one pads the embedding table (ModernBERT's 50,368 rows for 50,280 pieces)."""
    values = fields.to_dict()
    if values["vocab_size"] == 0:
        values["vocab_size"] = vocab_size
    elif values["vocab_size"] < vocab_size:
        raise UserError(
            f"config.model.vocab_size={values['vocab_size']} but the tokenizer has "
            f"{vocab_size} tokens: its ids from {values['vocab_size']} up would index past the "
            f"embedding table; set it to 0 to follow the tokenizer (or larger: a padded table)"
        )
    try:
        return BertConfig.from_dict(values)
    except ValueError as e:  # the model library names the field as model.NAME
        raise UserError(f"config.{e}") from None


def random_encoder(config: ml_collections.ConfigDict) -> pretrained.Pretrained:
    """A random encoder of config.model with config.tokenizer, seeded with config.seed."""
    if not config.tokenizer:
        raise UserError("config.init_from is empty, so the encoder starts from random weights "
                        "of config.model: give config.tokenizer (vocab.txt, tokenizer.json, "
                        "SentencePiece .model, or a Hub model id)")  # fmt: skip
    path = hub.local_path(config.tokenizer, "config.tokenizer", tokenizer_only=True)
    tokenizer = tokenizers.load_tokenizer(path)
    model = model_config(config.model, tokenizer.vocab_size)
    return pretrained.random_encoder(model, tokenizer, config.seed)


def check_positions(max_seq_length: int, model: pretrained.Pretrained) -> None:
    """`config.max_seq_length` within the encoder's learned positions (rows beyond them would
    make its output NaN), naming both numbers."""
    positions = model.config.max_position_embeddings
    if not 2 <= max_seq_length <= positions:
        raise UserError(
            f"config.max_seq_length={max_seq_length} must lie in 2..{positions}: {model.source} "
            f"has {positions} positions (model.max_position_embeddings)"
        )


def user_splits(
    config: ml_collections.ConfigDict, read: Callable[[str, str], list[T]], what: str
) -> dict[str, list[T]]:
    """{split: rows} of a job on the user's files: train from config.train_file, and dev and
    test from config.eval_file and config.test_file, or where one is empty, the
    config.dev_fraction and config.test_fraction of the training rows held out with
    config.split_seed (`hold_out`). `read(patterns, split)` reads files."""
    if not config.train_file:
        raise UserError(f"config.train_file is empty: give the training file(s), {what}")
    train = read(config.train_file, "train")
    if not train:
        raise UserError(f"config.train_file={config.train_file!r} holds no rows")
    wanted = (("dev", config.dev_fraction, config.eval_file),
              ("test", config.test_fraction, config.test_file))  # fmt: skip
    held = {split: fraction for split, fraction, given in wanted if not given and fraction > 0}
    train, *parts = hold_out(train, list(held.values()), config.split_seed)
    out = {"train": train, **dict(zip(held, parts, strict=True))}
    out |= {split: read(given, split) for split, _, given in wanted if given}
    return out


def hold_out(examples: Sequence[T], fractions: Sequence[float], seed: int) -> list[list[T]]:
    """The rows kept, then one held-out sample per fraction (dev, test), drawn without
    overlap by a permutation of the rows seeded with `seed`; each list in file order."""
    for fraction in fractions:
        if not 0.0 <= fraction < 1.0:
            raise UserError(f"a held-out fraction of {fraction} must lie in [0, 1)")
    order = np.random.default_rng(seed).permutation(len(examples))
    sizes = [round(f * len(examples)) for f in fractions]
    if sum(sizes) >= len(examples):
        raise UserError(f"holding out {sizes} of {len(examples)} rows leaves none to train on")
    held, start = [], 0
    for size in sizes:
        held.append(np.sort(order[start : start + size]))
        start += size
    kept = np.sort(order[start:])
    return [[examples[i] for i in part] for part in (kept, *held)]


def limited(items: Sequence[T], limit: int, config: ml_collections.ConfigDict) -> list[T]:
    """`items` cut to `limit` (0: all), as `config.limit_by` says: the first `limit`, or a
    sample of `limit` drawn with `config.seed`, kept in the file's order."""
    return [items[i] for i in limit_indices(len(items), limit, config)]


def limit_indices(count: int, limit: int, config: ml_collections.ConfigDict) -> np.ndarray:
    """The indices `limited` keeps of `count` items."""
    if config.limit_by not in ("first", "random"):
        raise UserError(f"config.limit_by={config.limit_by!r} must be first or random")
    if limit <= 0 or limit >= count:
        return np.arange(count)
    if config.limit_by == "first":
        return np.arange(limit)
    return np.sort(np.random.default_rng(config.seed).choice(count, limit, replace=False))
