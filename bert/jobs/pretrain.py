"""The pre-training job (`config.task = "pretrain"`, configs/bert_base.py): prepares the data,
builds BERT with the heads of its objective (`config.objective`, bert/objectives/), LAMB or
AdamW, and hands the run skeleton (bert/training/runner.py) its batches and held-out
evaluation."""

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from bert import flops, objectives, pretrained
from bert.jobs import downstream, settings
from bert.model import BertConfig
from bert.training import budget, optim, runner, sharding, step
from input_pipeline import batches, data_setup, pretraining, tokenizers, word_segmenter
from util import atomic, paths
from util.errors import UserError

TASK = "pretrain"


def initial_params(init_from: str, config: BertConfig) -> Any | None:
    """Parameters to start from (config.init_from: any checkpoint bert/pretrained.py loads), in
    the layout of `config` (model.scan_layers: the layers stacked; Pretrained.with_config)."""
    if not init_from:
        return None
    loaded = pretrained.load(init_from, with_tokenizer=False)
    params = loaded.params
    given = params.get("bert", {}).get("embeddings", {}).get("position_embeddings")
    if given is not None and given.shape[0] != config.max_position_embeddings:
        raise UserError(
            f"{init_from} has {given.shape[0]} positions, config.model.max_position_embeddings "
            f"is {config.max_position_embeddings}"
        )
    if loaded.config.vocab_size != config.vocab_size:  # e.g. a padded table (ModernBERT's)
        raise UserError(
            f"{init_from} embeds {loaded.config.vocab_size} token ids, the model here "
            f"{config.vocab_size}: set --config.model.vocab_size={loaded.config.vocab_size}"
        )
    try:
        return loaded.with_config(config).params
    except ValueError as e:  # e.g. fewer layers than config.model.num_layers
        raise UserError(f"{init_from} does not fit config.model (model.scan_layers): {e}") from None


def corpus(config: ml_collections.ConfigDict) -> data_setup.Corpus:
    """config.data's corpus fields."""
    segmenter = word_segmenter.check_name(config.data.word_segmenter)
    if segmenter and not config.data.whole_word_masking:
        raise UserError(
            f"config.data.word_segmenter={segmenter!r} gives the words of whole-word masking: "
            "set --config.data.whole_word_masking=true too"
        )
    return data_setup.Corpus(**{f.name: config.data[f.name]
                                for f in dataclasses.fields(data_setup.Corpus)})  # fmt: skip


def batch_settings(config: ml_collections.ConfigDict, objective) -> batches.Settings:
    """The pipeline's batches for `objective` (its data mode), from config.data."""
    d = config.data
    return batches.Settings(
        seq_length=config.max_seq_length,
        max_predictions_per_seq=d.max_predictions_per_seq,
        mode=objective.data_mode,
        mask_rate=d.mask_rate,
        whole_word_masking=d.whole_word_masking,
        short_seq_prob=d.short_seq_prob,
        nsp_random_prob=d.nsp_random_prob,
        pack_attention=d.pack_attention,
    )


def objective_options(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """The settings of config.objective: the config section of its name (config.electra) as a
    dict, or None where the config has none (bert/objectives/ OPTIONS says who needs one)."""
    name = config.objective
    return config[name].to_dict() if name in config else None


def documents_apart(config: ml_collections.ConfigDict) -> bool:
    """config.data.pack_attention, checked with the objective and model it needs: whether each
    document's part of a packed row attends only to itself."""
    value = config.data.pack_attention
    if value not in batches.PACK_ATTENTIONS:
        known = ", ".join(batches.PACK_ATTENTIONS)
        raise UserError(f"config.data.pack_attention={value!r} is not one of {known}")
    documents = value == "document"
    objectives.check(config.objective, documents, objective_options(config))
    if documents and config.model.attention_impl == "cudnn":
        raise UserError(
            "config.data.pack_attention='document' needs model.attention_impl=xla (cuDNN's "
            "attention here takes lengths, not a mask per document)"
        )
    return documents


def _dataset(files, batch: batches.Settings, ids: tokenizers.SpecialIds, per_host_batch: int,
             seed: int, start_step: int):  # fmt: skip
    """This host's pre-training batches from prepared `files`, from a step."""
    return pretraining.make_pretraining_dataset(
        files, batch, ids, batch_size=per_host_batch, seed=seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        start_step=start_step,
    )  # fmt: skip


def _mfu_metrics(objective, seq_length: int, predictions: int, peak_override: float):
    """summary -> {"mfu": ...} where the device's peak is known."""
    flops_per_seq = objective.train_flops(seq_length, predictions)
    peak = flops.peak_flops(jax.devices()[0].device_kind, peak_override)

    def mfu(summary: dict[str, float]) -> dict[str, float]:
        achieved = summary["sequences_per_second"] * flops_per_seq
        utilisation = flops.mfu(achieved, jax.device_count(), peak)
        return {} if utilisation is None else {"mfu": utilisation}

    return mfu


def _held_out_shape(eval_batches, mesh) -> list:
    """The abstract global batch of the held-out batches (every pre-training batch's shape:
    training batches come from the same dataset), or none when there are no held-out batches."""
    return [sharding.abstract_global_batch(b, mesh) for b in eval_batches[:1]]


def _evaluator(objective, mesh, params, eval_batches, compiler=None):
    """params -> held-out metrics: the objective's (MLM loss, accuracy and perplexity; NSP loss
    and accuracy).

    Args:
      params: the abstract parameters with their shardings.
      compiler: a CompileAhead to compile the evaluation step in the background, or None.
    """
    eval_step = step.compile_eval_step(objective, mesh, jax.tree.map(lambda p: p.sharding, params))
    if compiler is not None:
        eval_step = compiler.wrap(eval_step, params, _held_out_shape(eval_batches, mesh))

    def evaluate(params) -> dict[str, float]:
        results = step.summarize([eval_step(params, sharding.global_batch(b, mesh))
                                  for b in eval_batches])  # fmt: skip
        return objective.eval_metrics(results)

    return evaluate


def eval_batches_of(files, config, batch, ids, objective, per_host_batch) -> list:
    """The fixed held-out batches: `config.train.eval_batches` of them, seeded seed + 1."""
    dataset = _dataset(files, batch, ids, per_host_batch, config.seed + 1, 0)
    eval_set = dataset.take(config.train.eval_batches)
    return list(pretraining.numpy_batches(eval_set, objective.batch_keys, files))


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """mode=evaluate: the held-out metrics of `config.init_from` on all of `data.input`."""
    if not config.init_from:
        raise UserError("mode=evaluate needs config.init_from: the checkpoint to evaluate")
    loaded = pretrained.load(
        config.init_from, config.data.tokenizer, fields=("init_from", "data.tokenizer")
    )
    if "mlm" not in loaded.params and "generator_mlm" not in loaded.params:  # ELECTRA's
        raise UserError(f"{config.init_from} has no MLM head: nothing to evaluate")
    data = data_setup.prepare_pretraining_data(
        corpus(config), paths.path(workdir), str(loaded.tokenizer.path), evaluate_only=True
    )
    if config.max_seq_length > loaded.config.max_position_embeddings:
        positions = loaded.config.max_position_embeddings
        raise UserError(
            f"config.max_seq_length={config.max_seq_length} exceeds the checkpoint's {positions}"
        )
    mesh = sharding.make_mesh(config.mesh)
    # a head the checkpoint lacks is never scored
    objective = objectives.create(config.objective, loaded.config, set(loaded.params),
                                  documents_apart(config), objective_options(config))  # fmt: skip
    fresh = objective.model.init(jax.random.key(0), np.ones((1, 8), np.int32))["params"]
    fresh = jax.device_get(nn.meta.unbox(fresh))
    params = {k: loaded.params.get(k, v) for k, v in fresh.items()}
    t = config.train
    per_host = sharding.per_host_batch(t.batch_size, t.accumulation_steps, mesh)
    batch = batch_settings(config, objective)
    held_out = eval_batches_of(data.eval_files, config, batch, data.tokenizer.special_ids,
                               objective, per_host)  # fmt: skip
    replicated = sharding.replicated(mesh)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                            params)  # fmt: skip
    results = _evaluator(objective, mesh, abstract, held_out)(params)
    if jax.process_index() == 0:
        atomic.write_json(paths.path(workdir) / "eval_results.json",
                          {"checkpoint": config.init_from, **results})  # fmt: skip
    logging.info("%s on %s: %s", config.init_from, config.data.input, results)
    return results


def _prepare_data(config: ml_collections.ConfigDict, workdir: str) -> data_setup.PretrainingData:
    """Prepares `workdir/data` once for all hosts: a local folder is locked by the first host
    to come; an object store has no locks, so there process 0 prepares and the others wait."""
    text = corpus(config)
    if jax.process_count() == 1 or not paths.is_remote(workdir):
        return _prepare(text, workdir)
    data = None
    if jax.process_index() == 0:
        data = _prepare(text, workdir)
    multihost_utils.sync_global_devices("pretraining data prepared")
    return data or _prepare(text, workdir)


def _prepare(text: data_setup.Corpus, workdir: str) -> data_setup.PretrainingData:
    """data_setup's preparation, with SentencePiece's complaint about the vocabulary size
    turned into the config field to change."""
    try:
        return data_setup.prepare_pretraining_data(text, paths.path(workdir))
    except UserError as e:
        most = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)",
                         str(e))  # fmt: skip
        if most is None:
            raise
        raise UserError(
            f"config.data.sentencepiece_vocab_size={text.sentencepiece_vocab_size} is more "
            f"pieces than {text.input or text.tfds_name} holds: set it to at most {most[1]}"
        ) from None


def warmup_steps(train: ml_collections.ConfigDict) -> int:
    """The warm-up's steps: train.warmup_proportion of the run where it is set, otherwise
    train.warmup_steps."""
    if not 0 <= train.warmup_proportion < 1:
        raise UserError(f"train.warmup_proportion ({train.warmup_proportion}) must be in [0, 1)")
    if train.warmup_proportion:
        return round(train.warmup_proportion * train.steps)
    return train.warmup_steps


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Pre-trains per `config` in `workdir`, resuming from its newest checkpoint (or, with
    config.mode=evaluate, evaluates config.init_from).

    Returns {"step": ..., held-out metrics} (also written to workdir/eval_results.json).
    """
    # every config value before any data is prepared
    objectives.check(config.objective, options=objective_options(config))
    documents = documents_apart(config)
    if config.mode == "evaluate":
        return evaluate_checkpoint(config, workdir)
    # the model and its objective (the vocabulary size comes later)
    sizes = settings.model_config(config.model, config.model.vocab_size or 1)
    objectives.create(config.objective, sizes, documents=documents,
                      options=objective_options(config))  # fmt: skip
    if config.max_seq_length > config.model.max_position_embeddings:
        raise UserError(
            f"config.max_seq_length={config.max_seq_length} exceeds "
            f"config.model.max_position_embeddings={config.model.max_position_embeddings}"
        )
    downstream.check(config)
    mesh = sharding.make_mesh(config.mesh)
    t = config.train
    per_host = sharding.per_host_batch(t.batch_size, t.accumulation_steps, mesh)
    # with a time budget, the schedule of train.steps steps runs at the pace of the clock
    max_wall_clock = budget.check_seconds(t.max_wall_clock)
    schedule = optim.learning_rate_schedule(
        t.learning_rate, warmup_steps(t), t.steps, t.end_learning_rate, t.decay_power,
        t.schedule, t.decay_proportion, t.decay_shape,
    )  # fmt: skip
    own_rate = optim.UNIT_RATE if max_wall_clock else schedule  # Run.max_wall_clock says why
    tx = optim.make_optimizer(t.optimizer, own_rate, t.weight_decay, t.b1, t.b2, t.eps, t.clip_norm)
    data = _prepare_data(config, workdir)
    ids = data.tokenizer.special_ids
    bert_config = settings.model_config(config.model, ids.vocab_size)
    objective = objectives.create(config.objective, bert_config, documents=documents,
                                  options=objective_options(config))  # fmt: skip
    batch = batch_settings(config, objective)
    held_out = eval_batches_of(data.eval_files, config, batch, ids, objective, per_host)

    def train_batches(start: int):
        dataset = _dataset(data.train_files, batch, ids, per_host, config.seed, start)
        stream = pretraining.numpy_batches(dataset, objective.batch_keys, data.train_files)
        return lambda _: sharding.global_batch(next(stream), mesh)

    job = runner.Run(
        task=TASK,
        model=objective.model,
        model_config=bert_config,
        tokenizer=str(data.tokenizer.path),
        objective=objective,
        tx=tx,
        schedule=schedule,
        total_steps=t.steps,
        seq_length=config.max_seq_length,
        initial_params=lambda: initial_params(config.init_from, bert_config),
        batches=train_batches,
        make_evaluate=lambda params, compiler: _evaluator(
            objective, mesh, params, held_out, compiler
        ),
        extra_metrics=_mfu_metrics(objective, config.max_seq_length,
                                   config.data.max_predictions_per_seq, t.peak_flops_per_device),
        # the one train step compiles while the input pipeline starts
        batch_shapes=lambda _: _held_out_shape(held_out, mesh),
        max_wall_clock=max_wall_clock,
        probe=downstream.probes(config, bert_config, data.tokenizer, workdir),
    )  # fmt: skip
    return runner.train_and_evaluate(job, settings.run_settings(config), workdir, mesh)
