"""The pre-training job (`config.task = "pretrain"`, configs/bert_base.py): prepares the data,
builds BERT with its MLM and NSP heads, LAMB or AdamW, and hands the run skeleton
(bert/training/runner.py) its batches and held-out evaluation."""

import math
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from bert import flops, pretrained
from bert.heads import BertForPreTraining
from bert.model import BertConfig
from bert.training import objectives, optim, runner, sharding, step
from input_pipeline import atomic, data_setup, paths, pretraining
from input_pipeline.errors import UserError

TASK = "pretrain"


def model_config(fields: ml_collections.ConfigDict, vocab_size: int) -> BertConfig:
    """The model config, with the vocabulary size taken from the tokenizer when it is 0."""
    values = fields.to_dict()
    if values["vocab_size"] == 0:
        values["vocab_size"] = vocab_size
    elif values["vocab_size"] != vocab_size:
        raise UserError(
            f"config.model.vocab_size={values['vocab_size']} but the tokenizer has "
            f"{vocab_size} tokens; set it to 0 to follow the tokenizer"
        )
    try:
        return BertConfig.from_dict(values)
    except ValueError as e:  # the model library names the field as model.NAME
        raise UserError(f"config.{e}") from None


def initial_params(init_from: str, config: BertConfig) -> Any | None:
    """Parameters to start from (config.init_from: any checkpoint bert/pretrained.py loads)."""
    if not init_from:
        return None
    params = pretrained.load(init_from, with_tokenizer=False).params
    given = params.get("bert", {}).get("embeddings", {}).get("position_embeddings")
    if given is not None and given.shape[0] != config.max_position_embeddings:
        raise UserError(
            f"{init_from} has {given.shape[0]} positions, config.model.max_position_embeddings "
            f"is {config.max_position_embeddings}"
        )
    return params


def make_dataset(files, config, tokenizer, per_host_batch, seed, start_step):
    """This host's pre-training batches from prepared `files`, as `config` asks, from a step."""
    d = config.data
    return pretraining.make_pretraining_dataset(
        files,
        batch_size=per_host_batch,
        seq_length=config.max_seq_length,
        max_predictions_per_seq=d.max_predictions_per_seq,
        vocab_size=tokenizer.vocab_size,
        pad_id=tokenizer.pad_id,
        unk_id=tokenizer.unk_id,
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
        mask_id=tokenizer.mask_id,
        mode=d.mode,
        mask_rate=d.mask_rate,
        whole_word_masking=d.whole_word_masking,
        short_seq_prob=d.short_seq_prob,
        nsp_random_prob=d.nsp_random_prob,
        seed=seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        start_step=start_step,
    )


def _mfu_metrics(config, bert_config: BertConfig, use_nsp: bool):
    """summary -> {"mfu": ...} where the device's peak is known."""
    flops_per_seq = flops.train_flops_per_sequence(
        bert_config, config.max_seq_length, config.data.max_predictions_per_seq, use_nsp
    )
    peak = flops.peak_flops(jax.devices()[0].device_kind, config.train.peak_flops_per_device)

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
    """params -> held-out metrics: MLM loss, accuracy and perplexity; NSP loss and accuracy.

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
        results["mlm_perplexity"] = math.exp(min(results["mlm_loss"], 700.0))
        return results

    return evaluate


def eval_batches_of(files, config, tokenizer, per_host_batch) -> list:
    """The fixed held-out batches: `config.train.eval_batches` of them, seeded seed + 1."""
    dataset = make_dataset(files, config, tokenizer, per_host_batch, config.seed + 1, 0)
    return list(dataset.take(config.train.eval_batches).as_numpy_iterator())


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """mode=evaluate: the held-out metrics of `config.init_from` on all of `data.input`."""
    if not config.init_from:
        raise UserError("mode=evaluate needs config.init_from: the checkpoint to evaluate")
    loaded = pretrained.load(config.init_from, config.data.tokenizer)
    if "mlm" not in loaded.params:
        raise UserError(f"{config.init_from} has no MLM head: nothing to evaluate")
    data = data_setup.prepare_pretraining_data(
        config.data, paths.path(workdir), str(loaded.tokenizer.path), evaluate_only=True
    )
    if config.max_seq_length > loaded.config.max_position_embeddings:
        positions = loaded.config.max_position_embeddings
        raise UserError(
            f"config.max_seq_length={config.max_seq_length} exceeds the checkpoint's {positions}"
        )
    mesh = sharding.make_mesh(config.mesh)
    model = BertForPreTraining(loaded.config)
    use_nsp = config.data.mode == "nsp" and "nsp" in loaded.params
    fresh = model.init(jax.random.key(0), np.ones((1, 8), np.int32))["params"]
    fresh = jax.device_get(nn.meta.unbox(fresh))
    params = {**fresh, **loaded.params}  # a head the checkpoint lacks is never scored
    batches = eval_batches_of(data.eval_files, config, data.tokenizer,
                            sharding.per_host_batch(config.train, mesh))  # fmt: skip
    objective = objectives.pretraining(model, use_nsp)
    replicated = sharding.replicated(mesh)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                            params)  # fmt: skip
    results = _evaluator(objective, mesh, abstract, batches)(params)
    if jax.process_index() == 0:
        atomic.write_json(paths.path(workdir) / "eval_results.json",
                          {"checkpoint": config.init_from, **results})  # fmt: skip
    logging.info("%s on %s: %s", config.init_from, config.data.input, results)
    return results


def _prepare_data(config: ml_collections.ConfigDict, workdir: str) -> data_setup.PretrainingData:
    """Prepares `workdir/data` once for all hosts: a local folder is locked by the first host
    to come; an object store has no locks, so there process 0 prepares and the others wait."""
    if jax.process_count() == 1 or not paths.is_remote(workdir):
        return data_setup.prepare_pretraining_data(config.data, paths.path(workdir))
    data = None
    if jax.process_index() == 0:
        data = data_setup.prepare_pretraining_data(config.data, paths.path(workdir))
    multihost_utils.sync_global_devices("pretraining data prepared")
    return data or data_setup.prepare_pretraining_data(config.data, paths.path(workdir))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Pre-trains per `config` in `workdir`, resuming from its newest checkpoint (or, with
    config.mode=evaluate, evaluates config.init_from).

    Returns {"step": ..., held-out metrics} (also written to workdir/eval_results.json).
    """
    if config.mode == "evaluate":
        return evaluate_checkpoint(config, workdir)
    data = _prepare_data(config, workdir)
    tokenizer = data.tokenizer
    bert_config = model_config(config.model, tokenizer.vocab_size)
    if config.max_seq_length > bert_config.max_position_embeddings:
        raise UserError(
            f"config.max_seq_length={config.max_seq_length} exceeds "
            f"config.model.max_position_embeddings={bert_config.max_position_embeddings}"
        )
    mesh = sharding.make_mesh(config.mesh)
    per_host_batch = sharding.per_host_batch(config.train, mesh)
    t = config.train
    schedule = optim.learning_rate_schedule(
        t.learning_rate, t.warmup_steps, t.steps, t.end_learning_rate, t.decay_power
    )
    tx = optim.make_optimizer(t.optimizer, schedule, t.weight_decay, t.b1, t.b2, t.eps, t.clip_norm)
    model = BertForPreTraining(bert_config)
    use_nsp = config.data.mode == "nsp"
    objective = objectives.pretraining(model, use_nsp)
    eval_batches = eval_batches_of(data.eval_files, config, tokenizer, per_host_batch)

    def batches(start: int):
        stream = make_dataset(
            data.train_files, config, tokenizer, per_host_batch, config.seed, start
        )
        iterator = stream.as_numpy_iterator()
        return lambda _: sharding.global_batch(next(iterator), mesh)

    job = runner.Run(
        task=TASK,
        model=model,
        model_config=bert_config,
        tokenizer=str(tokenizer.path),
        objective=objective,
        tx=tx,
        schedule=schedule,
        total_steps=t.steps,
        seq_length=config.max_seq_length,
        initial_params=lambda: initial_params(config.init_from, bert_config),
        batches=batches,
        make_evaluate=lambda params, compiler: _evaluator(
            objective, mesh, params, eval_batches, compiler
        ),
        extra_metrics=_mfu_metrics(config, bert_config, use_nsp),
        # the one train step compiles while the input pipeline starts
        batch_shapes=lambda _: _held_out_shape(eval_batches, mesh),
    )
    results = runner.train_and_evaluate(job, config, workdir, mesh)
    logging.info("pre-training stopped at step %d", results["step"])
    return results
