"""A fine-tuning run, shared by the GLUE, SQuAD, NER and sentence-embedding jobs.

A job loads the pretrained encoder with its tokenizer (`load_encoder`), turns its data into
feature arrays, and hands `run` a `Spec` (spec.py): the task's name, the model with its head,
the loss over named inputs and labels, the training arrays and the evaluation sets, with the
run's `Settings`. `run` gives them to the run skeleton (bert/training/runner.py) with AdamW/LAMB,
warm-up and linear decay, and a prediction step: every evaluation set turns the model's outputs
into its metrics and writes its own predictions (predict.py).

Training batches come from batches.py: a seeded random order per epoch (order.py), so a resumed
run is identical to an uninterrupted one, each batch padded only to the smallest length bucket
that holds its longest row (buckets.py; each text of a bi-encoder to its own), or packed whole
into rows (packing.py): a per-token task's (NER) sentences, or a bi-encoder's texts of every
side into shared rows. The job knows every step's shape in advance, so the steps of all the
shapes a run needs (and the evaluation's) compile in the background while the first steps run
(bert/training/ahead.py).
"""

import dataclasses
from typing import Any

import jax

from bert import heads, pretrained
from bert.finetuning import batches, buckets, order, predict
from bert.finetuning.spec import Spec
from bert.model import BertConfig
from bert.training import optim, runner, sharding
from util.errors import UserError


@dataclasses.dataclass(frozen=True)
class Settings:
    """A fine-tuning run's settings (configs/common.py documents each field; bert/jobs/settings.py
    reads them from a job's config).

    Attributes:
      run: the skeleton's settings (seed, batch size, reports, checkpoints).
      mesh: devices along (data, fsdp, tensor).
      steps, epochs: the run's length: `steps` when above 0, else `epochs` of whole batches.
      group_by_length, pack, pack_length: how batches are formed (batches.py).
      warmup_proportion: the share of the steps in linear warm-up.
      optimizer, learning_rate, weight_decay, b1, b2, eps, clip_norm: bert/training/optim.py's.
      pad_to_multiple_of: the length buckets (buckets.bucket_length); 0: full length.
      text_bucket_ratio: when a model's texts take buckets of their own (buckets.side_groups).
      eval_batch_size: rows per prediction batch, all hosts together.
    """

    run: runner.Settings
    mesh: tuple[int, ...]
    steps: int
    epochs: float
    group_by_length: int
    pack: bool
    pack_length: int
    warmup_proportion: float
    optimizer: str
    learning_rate: float
    weight_decay: float
    b1: float
    b2: float
    eps: float
    clip_norm: float
    pad_to_multiple_of: int
    text_bucket_ratio: float
    eval_batch_size: int


def load_encoder(
    init_from: str, tokenizer: str, overrides: dict[str, Any]
) -> pretrained.Pretrained:
    """The checkpoint `init_from` with its tokenizer (or `tokenizer`), its model config updated
    with `overrides` (config.model's fields that may differ from the checkpoint's: dtype,
    dropout, attention implementation, the head's initializer, scan_layers, remat), its
    parameters in that config's layout (a checkpoint of either layout for a scanned or an
    unrolled model)."""
    if not init_from:
        raise UserError(
            "config.init_from is empty: give a checkpoint (HF directory, Google TF checkpoint, "
            "or a workdir of ours)"
        )
    return overridden(pretrained.load(init_from, tokenizer), overrides)


def overridden(loaded: pretrained.Pretrained, overrides: dict[str, Any]) -> pretrained.Pretrained:
    """`loaded` for its model config updated with `overrides` (`load_encoder`'s)."""
    fields = {**dataclasses.asdict(loaded.config), **overrides}
    try:
        config = BertConfig.from_dict(fields)
    except ValueError as e:  # the model library names the field as model.NAME
        raise UserError(f"config.{e}") from None
    return loaded.with_config(config)  # the sizes are the checkpoint's: its layers all fit


def _check(settings: Settings, mesh) -> None:
    if settings.run.batch_size < 1:
        raise UserError(f"config.train.batch_size={settings.run.batch_size} must be at least 1")
    if settings.steps < 0:
        raise UserError(
            f"config.train.steps={settings.steps} must be 0 (run config.train.epochs) or more"
        )
    if not settings.steps and settings.epochs <= 0:
        raise UserError(
            f"config.train.epochs={settings.epochs} must be more than 0 (or set train.steps)"
        )
    sharding.per_host_batch(settings.run.batch_size, settings.run.accumulation_steps, mesh)
    divisor = sharding.batch_divisor(mesh) * jax.process_count()
    if settings.pad_to_multiple_of < 0:
        raise UserError(
            f"config.pad_to_multiple_of={settings.pad_to_multiple_of} must be 0 (no buckets) or "
            "more"
        )
    if settings.eval_batch_size % divisor:
        raise UserError(
            f"config.eval_batch_size={settings.eval_batch_size} must be a multiple of {divisor} "
            "(data x fsdp devices x hosts)"
        )


def run(
    spec: Spec, encoder: pretrained.Pretrained, settings: Settings, workdir: str
) -> dict[str, Any]:
    """Fine-tunes `spec` from the pretrained encoder, resuming from `workdir`'s checkpoint.

    Args:
      encoder: the pretrained model and tokenizer (`load_encoder`); its encoder parameters
        start the model, its tokenizer is recorded in the checkpoints.

    Returns:
      {"step": last step, split: {metric: value}} (also written to workdir/eval_results.json).
    """
    s = settings
    mesh = sharding.make_mesh(s.mesh)
    _check(s, mesh)
    inputs = {k: spec.train[k] for k in spec.input_keys}
    # the order groups by the rows' real lengths, whatever the padding: the same rows each step
    lengths = buckets.lengths_of(inputs, multiple=1)
    rows = order.make_row_order(len(lengths), s.run.batch_size, s.steps, s.epochs,
                                s.group_by_length, s.run.seed, lengths, spec.row_texts)  # fmt: skip
    warmup = round(s.warmup_proportion * rows.total_steps)
    schedule = optim.learning_rate_schedule(s.learning_rate, warmup, rows.total_steps)
    tx = optim.make_optimizer(s.optimizer, schedule, s.weight_decay, s.b1, s.b2, s.eps, s.clip_norm)
    objective, train = batches.train_batches(spec, s, rows, lengths, mesh)
    job = runner.Run(
        task=spec.task,
        model=spec.model,
        model_config=encoder.config,
        tokenizer=str(encoder.tokenizer.path),
        objective=objective,
        tx=tx,
        schedule=schedule,
        total_steps=rows.total_steps,
        seq_length=spec.train[spec.input_keys[0]].shape[1],
        initial_params=lambda: heads.fine_tuning_start(spec.model, encoder.params),
        batches=train.batches,
        make_evaluate=predict.evaluator(spec, s.pad_to_multiple_of, s.eval_batch_size, mesh),
        labels=spec.labels,
        recorded=spec.recorded,
        batch_shapes=train.shapes,
    )
    return runner.train_and_evaluate(job, s.run, workdir, mesh)
