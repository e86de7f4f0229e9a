"""The pre-training job (`config.task = "pretrain"`): data, state, the loop, evaluation,
checkpoints, logging, and a clean stop on SIGTERM/SIGINT."""

import dataclasses
import pathlib
import sys
from typing import Any

import jax
import ml_collections
from absl import logging

from bert import checkpoint, convert, flops, loop, optim, reporting, sharding, train
from bert.heads import BertForPreTraining
from bert.model import BertConfig
from input_pipeline import data_setup, pretraining


def model_config(fields: ml_collections.ConfigDict, vocab_size: int) -> BertConfig:
    """The model config, with the vocabulary size taken from the tokenizer when it is 0."""
    values = fields.to_dict()
    if values["vocab_size"] == 0:
        values["vocab_size"] = vocab_size
    elif values["vocab_size"] != vocab_size:
        raise ValueError(
            f"config.model.vocab_size={values['vocab_size']} but the tokenizer has "
            f"{vocab_size} tokens; set it to 0 to follow the tokenizer"
        )
    return BertConfig.from_dict(values)


def initial_params(init_from: str, config: BertConfig) -> Any | None:
    """Parameters to start from: a pre-training workdir or any checkpoint bert.convert reads."""
    if not init_from:
        return None
    if checkpoint.is_training_workdir(init_from):
        params, meta = checkpoint.load_params(init_from)
        logging.info("initialising from %s step %s", init_from, meta.get("step"))
    else:
        imported = convert.import_model(init_from)
        params = imported.params
        if imported.missing_heads:
            logging.info("%s has no %s: those start random", init_from, imported.missing_heads)
    given = params.get("bert", {}).get("embeddings", {}).get("position_embeddings")
    if given is not None and given.shape[0] != config.max_position_embeddings:
        raise ValueError(
            f"{init_from} has {given.shape[0]} positions, config.model.max_position_embeddings "
            f"is {config.max_position_embeddings}"
        )
    return params


def _dataset(files, data_cfg, tokenizer, per_host_batch, seed, start_step):
    return pretraining.make_pretraining_dataset(
        files,
        batch_size=per_host_batch,
        seq_length=data_cfg.seq_length,
        max_predictions_per_seq=data_cfg.max_predictions_per_seq,
        vocab_size=tokenizer.vocab_size,
        pad_id=tokenizer.pad_id,
        unk_id=tokenizer.unk_id,
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
        mask_id=tokenizer.mask_id,
        mode=data_cfg.mode,
        mask_rate=data_cfg.mask_rate,
        whole_word_masking=data_cfg.whole_word_masking,
        short_seq_prob=data_cfg.short_seq_prob,
        nsp_random_prob=data_cfg.nsp_random_prob,
        seed=seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        start_step=start_step,
    )


def evaluate(eval_step, params, batches, mesh) -> dict[str, float]:
    metrics = [eval_step(params, sharding.global_batch(b, mesh)) for b in batches]
    return train.summarize(metrics)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Pre-trains per `config` in `workdir`, resuming from its latest checkpoint.

    Returns the final evaluation metrics (also written to workdir/eval_results.json).
    """
    workdir_path = pathlib.Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    data = data_setup.prepare_pretraining_data(config.data, workdir_path)
    tokenizer = data.tokenizer
    bert_config = model_config(config.model, tokenizer.vocab_size)
    mesh = sharding.make_mesh(config.mesh)
    per_host_batch = sharding.per_host_batch(config.train, mesh)
    t = config.train
    model = BertForPreTraining(bert_config)
    schedule = optim.learning_rate_schedule(
        t.learning_rate, t.warmup_steps, t.steps, t.end_learning_rate, t.decay_power
    )
    tx = optim.make_optimizer(t.optimizer, schedule, t.weight_decay, t.b1, t.b2, t.eps, t.clip_norm)
    seq_length = config.data.seq_length
    if seq_length > bert_config.max_position_embeddings:
        raise ValueError(
            f"config.data.seq_length={seq_length} exceeds "
            f"config.model.max_position_embeddings={bert_config.max_position_embeddings}"
        )
    abstract, shardings = train.state_shardings(model, tx, mesh, seq_length)
    ckpts = checkpoint.Checkpoints(workdir_path, t.max_to_keep, t.async_checkpoints)
    latest = ckpts.latest_step()
    meta_model = dataclasses.asdict(bert_config)
    if latest is not None:
        try:
            state, meta = ckpts.restore(latest, abstract, shardings)
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"{ckpts.directory}/{latest}: cannot restore this checkpoint into the configured "
                f"model and optimizer (did config.model or train.optimizer change? use a new "
                f"workdir, with train.init_from to keep the parameters): {e}"
            ) from e
        if meta.get("model") != meta_model:
            raise ValueError(
                f"{ckpts.directory}/{latest}: saved with model {meta.get('model')}, "
                f"the config now says {meta_model}; use a new workdir"
            )
        logging.info("resumed from step %d", latest)
    else:
        params = initial_params(t.init_from, bert_config)
        state = train.create_train_state(model, tx, mesh, config.seed, seq_length, params)
    start = int(jax.device_get(state.step))
    step_config = train.StepConfig(t.accumulation_steps, config.data.mode == "nsp", config.seed)
    train_step, eval_step = train.compile_steps(model, tx, schedule, mesh, shardings, step_config)

    train_batches = _dataset(data.train_files, config.data, tokenizer, per_host_batch,
                             config.seed, start).as_numpy_iterator()  # fmt: skip
    eval_ds = _dataset(data.eval_files, config.data, tokenizer, per_host_batch, config.seed + 1, 0)
    eval_batches = list(eval_ds.take(t.eval_batches).as_numpy_iterator())

    writer = reporting.make_writer(workdir_path)
    if start == 0:
        writer.write_hparams(reporting.flat_hparams(config))
    flops_per_seq = flops.train_flops_per_sequence(
        bert_config, seq_length, config.data.max_predictions_per_seq, step_config.use_nsp
    )
    peak = flops.peak_flops(jax.devices()[0].device_kind, t.peak_flops_per_device)
    progress = reporting.Progress(t.steps, start, t.batch_size, seq_length)

    def mfu(summary: dict[str, float]) -> dict[str, float]:
        achieved = summary["sequences_per_second"] * flops_per_seq
        utilisation = flops.mfu(achieved, jax.device_count(), peak)
        return {} if utilisation is None else {"mfu": utilisation}

    def run_eval(step: int, state: Any) -> None:
        results = evaluate(eval_step, state.params, eval_batches, mesh)
        writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})

    def save(step: int, state: Any) -> None:
        ckpts.save(step, state, {"step": step, "data_step": step, "model": meta_model})

    state, step = loop.run(
        state,
        start,
        t.steps,
        batch_at=lambda _: sharding.global_batch(next(train_batches), mesh),
        train_step=train_step,
        every=loop.Every(t.log_every, t.checkpoint_every, t.eval_every),
        ckpts=ckpts,
        save=save,
        writer=writer,
        progress=progress,
        evaluate=run_eval,
        extra_metrics=mfu,
    )
    ckpts.wait()
    results = evaluate(eval_step, state.params, eval_batches, mesh)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
    writer.flush()
    if jax.process_index() == 0:
        reporting.write_json_atomically(
            workdir_path / "eval_results.json", {"step": step, **results}
        )
    ckpts.close()
    logging.info("stopped at step %d; eval %s", step, results)
    sys.stdout.flush()
    return results
