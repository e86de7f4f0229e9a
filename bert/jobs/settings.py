"""The jobs' reading of their config: each config section the machinery needs, as the typed
value it takes. Jobs alone read config sections; what they call takes these values."""

from collections.abc import Sequence
from typing import TypeVar

import ml_collections
import numpy as np

from bert import pretrained
from bert.finetuning import finetune
from bert.training import reporting, runner
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
    overrides."""
    overrides = {name: config.model[name] for name in MODEL_OVERRIDES}
    if given is None:
        loaded = finetune.load_encoder(config.init_from, config.tokenizer, overrides)
    else:
        loaded = finetune.overridden(given, overrides)
    check_positions(config.max_seq_length, loaded)
    return loaded


def check_positions(max_seq_length: int, model: pretrained.Pretrained) -> None:
    """`config.max_seq_length` within the encoder's learned positions (rows beyond them would
    make its output NaN), naming both numbers."""
    positions = model.config.max_position_embeddings
    if not 2 <= max_seq_length <= positions:
        raise UserError(
            f"config.max_seq_length={max_seq_length} must lie in 2..{positions}: {model.source} "
            f"has {positions} positions (model.max_position_embeddings)"
        )


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
