"""The pre-training job end to end through main.py: outputs, errors, signals, resume."""

import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bert.jobs import glue as glue_job
from bert.jobs import pretrain
from bert.jobs.settings import model_config
from bert.training import checkpoints
from configs import bert_base
from configs import glue as glue_config
from tests import docs_commands
from util import console
from util.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Margins beyond the frequency baseline, about half of what the README's recipe reaches in
# RECIPE_STEPS steps.
MARGIN_LOSS, MARGIN_ACCURACY = 0.14, 0.015


def job_settings(shared_data, steps, **overrides) -> dict:
    """Config fields for a tiny model on four real Wikipedia files."""
    wiki = shared_data / "wikipedia" / "AA"
    settings = {
        "data.input": f"{wiki}/wiki_00,{wiki}/wiki_01,{wiki}/wiki_02,{wiki}/wiki_03",
        "data.format": "wikiextractor",
        "data.tokenizer": str(shared_data / "vocab" / "bert-base-uncased-vocab.txt"),
        "data.num_shards": 4,
        "max_seq_length": 64,
        "data.max_predictions_per_seq": 10,
        "model.max_position_embeddings": 64,
        "train.batch_size": 16,
        "train.steps": steps,
        "train.warmup_steps": 2,
        "train.log_every": 1,
        "train.eval_every": 1000,
        "train.eval_batches": 2,
        "train.checkpoint_every": 5,
    }
    settings.update(overrides)
    return settings


def job_args(shared_data, workdir, steps, **overrides):
    """main.py arguments for a tiny model on four real Wikipedia files."""
    settings = job_settings(shared_data, steps, **overrides)
    return [
        sys.executable,
        str(ROOT / "main.py"),
        "--config=configs/bert_base.py:size=tiny",
        f"--workdir={workdir}",
        *(f"--config.{k}={v}" for k, v in settings.items()),
    ]


def with_prepared_data(prepared_wiki: pathlib.Path, workdir: pathlib.Path) -> pathlib.Path:
    """`workdir` holding a copy of the prepared_wiki fixture (tests/conftest.py): a run of
    job_args's corpus there finds its data prepared."""
    shutil.copytree(prepared_wiki, workdir / "data")
    return workdir


def pretrain_config(shared_data, workdir, steps, **overrides):
    """The config job_args gives main.py, built here to run the job in this process."""
    return main_config(job_args(shared_data, workdir, steps, **overrides)[2:])


def main_config(args: list[str]):
    """The pre-training config main.py builds from its arguments (--config=configs/bert_base.py
    with its arg, --config.FIELD=VALUE), built here to run the job in this process."""
    assert args[0].startswith("--config=configs/bert_base.py"), args[0]
    config = bert_base.get_config(args[0].partition(":")[2])
    for flag in args[1:]:
        if not flag.startswith("--config."):
            continue  # --workdir
        key, value = flag.removeprefix("--config.").split("=", 1)
        *sections, field = key.split(".")
        target = config
        for section in sections:
            target = target[section]
        current = target[field]
        target[field] = value == "True" if isinstance(current, bool) else type(current)(value)
    return config


def environment(devices=2):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def run_job(args, timeout=600, devices=2):
    """main.py with `args` on `devices` CPU devices (1: as a user's CPU runs it, faster)."""
    result = subprocess.run(
        args, cwd=ROOT, env=environment(devices), capture_output=True, text=True, timeout=timeout
    )
    return result


def start_job(args, log_path):
    log = open(log_path, "w")  # noqa: SIM115 (closed by the caller through the process)
    return subprocess.Popen(args, cwd=ROOT, env=environment(), stdout=log, stderr=log), log


def wait_for(predicate, timeout, process=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if process is not None and process.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def scalars(workdir, tag):
    """(step, value) pairs of a scalar written to the TensorBoard event files."""
    import tensorflow as tf

    values = []
    for path in sorted(pathlib.Path(workdir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    values.append((event.step, float(tf.make_ndarray(value.tensor))))
    return values


def held_out_corpus(shared_data) -> dict:
    """Settings that evaluate on a separate corpus, prepared into the workdir's eval_data."""
    return {"data.eval_input": shared_data / "wikipedia" / "AA" / "wiki_10", "data.eval_shards": 1}


@pytest.fixture(scope="module")
def twelve_steps(shared_data, prepared_wiki, tmp_path_factory):
    """A 12-step run through main.py holding out another corpus, uninterrupted (checkpoints at
    steps 5, 10 and 12)."""
    workdir = with_prepared_data(prepared_wiki, tmp_path_factory.mktemp("twelve"))
    result = run_job(job_args(shared_data, workdir, steps=12, **held_out_corpus(shared_data)))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.full
def test_run_writes_events_checkpoint_and_evaluation(shared_data, twelve_steps, tmp_path):
    run = twelve_steps
    losses = scalars(run, "train/loss")
    assert [s for s, _ in losses] == list(range(1, 13))
    assert all(np.isfinite(v) and v > 5 for _, v in losses)
    for tag in ("train/mlm_accuracy", "train/nsp_loss", "train/learning_rate",
                "train/grad_norm", "train/sequences_per_second", "train/tokens_per_second",
                "train/padding_fraction", "eval/mlm_accuracy", "eval/nsp_accuracy"):  # fmt: skip
        assert scalars(run, tag), tag
    # tokens/s counts real tokens: the padding fraction of each report is a fraction.
    assert all(0 <= v < 1 for _, v in scalars(run, "train/padding_fraction"))
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir()) == [5, 10, 12]
    results = json.loads((run / "eval_results.json").read_text())
    assert results["step"] == 12 and 0 <= results["mlm_accuracy"] <= 1
    # The workdir is a checkpoint that fine-tuning starts from, with the tokenizer it recorded.
    config = glue_config.get_config("task=sst2")
    config.init_from = str(run)
    config.data_dir = str(shared_data / "glue" / "SST-2")
    config.max_seq_length, config.train_limit, config.eval_limit = 64, 32, 16
    config.eval_batch_size, config.train.batch_size, config.train.steps = 16, 16, 2
    config.predict_splits = ()
    fine_tuned = glue_job.run(config, str(tmp_path / "sst2"))
    assert fine_tuned["step"] == 2 and 0 <= fine_tuned["dev"]["accuracy"] <= 1
    assert (run / "data" / "manifest.json").is_file()


@pytest.mark.full
def test_mlm_objective_trains_without_nsp_and_exports_a_masked_lm(
    shared_data, prepared_wiki, tmp_path
):
    """config.objective=mlm: no NSP head or metric, and a workdir that exports as transformers'
    BertForMaskedLM with no missing or unexpected weights, whose logits equal ours."""
    import torch
    import transformers

    from bert import objectives, pretrained
    from bert.export import cli

    workdir = with_prepared_data(prepared_wiki, tmp_path / "run")
    result = run_job(job_args(shared_data, workdir, steps=4, objective="mlm"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert scalars(workdir, "train/mlm_loss") and not scalars(workdir, "train/nsp_loss")
    results = json.loads((workdir / "eval_results.json").read_text())
    assert results["step"] == 4 and "mlm_perplexity" in results and "nsp_loss" not in results
    loaded = pretrained.load(str(workdir))
    assert sorted(loaded.params) == ["bert", "mlm"]
    assert cli.main([str(workdir), str(tmp_path / "hf"), "--to=hf"]) == 0
    hf, info = transformers.BertForMaskedLM.from_pretrained(tmp_path / "hf",
                                                            output_loading_info=True)  # fmt: skip
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    ids = np.array([loaded.tokenizer.build_inputs(loaded.tokenizer.encode_ids(
        "the cat sat on the mat"))[0]], np.int32)  # fmt: skip
    ours = objectives.create("mlm", loaded.config).model.apply({"params": loaded.params}, ids)
    with torch.no_grad():
        theirs = hf.eval()(torch.from_numpy(ids).long()).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours["mlm_logits"]), theirs, rtol=0, atol=1e-5)


@pytest.mark.full
def test_train_and_eval_steps_compile_once_ahead(shared_data, prepared_wiki, tmp_path, caplog):
    """The train step compiles while the input pipeline starts, the evaluation step and the
    checkpoint checksums while training runs: each once, in the background thread
    (bert/training/ahead.py), none on first use."""
    caplog.set_level(logging.DEBUG, logger="jax._src.interpreters.pxla")
    # an earlier test in this process may have compiled the same programs (the checksums of
    # this state): a cached executable logs no compilation
    jax.clear_caches()
    config = pretrain_config(shared_data, tmp_path, 3, **{"train.eval_every": 2})
    with_prepared_data(prepared_wiki, tmp_path)
    assert pretrain.run(config, str(tmp_path))["step"] == 3
    threads = {
        name: [r.threadName for r in caplog.records
               if r.msg.startswith("Compiling") and r.args[0] == f"jit({name})"]
        for name in ("train_step", "eval_step", "_checksum_tree")
    }  # fmt: skip
    assert threads == dict.fromkeys(threads, ["compile-ahead_0"])


def test_misspelt_config_field_is_a_clear_error(shared_data, tmp_path):
    args = job_args(shared_data, tmp_path, steps=2)
    args.append("--config.train.learnig_rate=0.1")
    result = run_job(args)
    assert result.returncode != 0
    assert "learnig_rate" in result.stderr and 'Did you mean "learning_rate"' in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_config_values_are_checked_before_the_data_is_prepared(shared_data, tmp_path):
    config = pretrain_config(shared_data, tmp_path, 50, **{"train.warmup_steps": 10_000})
    with pytest.raises(UserError, match=r"^train.warmup_steps \(10000\) must be in \[0, 50\]"):
        pretrain.run(config, str(tmp_path))
    config = pretrain_config(shared_data, tmp_path, 50, **{"max_seq_length": 128})
    with pytest.raises(UserError, match="max_seq_length=128 exceeds .*max_position_embeddings=64"):
        pretrain.run(config, str(tmp_path))
    assert not (tmp_path / "data").exists()


def test_a_vocabulary_too_large_for_the_corpus_names_its_field(shared_data, tmp_path):
    text = shared_data / "wikipedia" / "AA" / "wiki_00"
    config = pretrain_config(shared_data, tmp_path / "run", 2, **{
        "data.input": text, "data.tokenizer": "", "data.num_shards": 2,
        "data.sentencepiece_vocab_size": 32768})  # fmt: skip
    with pytest.raises(UserError) as error:
        pretrain.run(config, str(tmp_path / "run"))
    most = re.fullmatch(rf"config.data.sentencepiece_vocab_size=32768 is more pieces than "
                        rf"{text} holds: set it to at most (\d+)", str(error.value))  # fmt: skip
    assert most and 1000 < int(most[1]) < 32768, str(error.value)


def test_more_shards_than_documents_names_the_field(shared_data, tmp_path):
    """A corpus of fewer documents than shards would leave a shard's input stream without any:
    one error naming data.num_shards (or data.eval_shards for a separate held-out corpus)."""
    text = shared_data / "wikipedia" / "AA" / "wiki_00"
    settings = {"data.input": text, "data.num_shards": 200}
    config = pretrain_config(shared_data, tmp_path / "run", 2, **settings)
    with pytest.raises(UserError) as error:
        pretrain.run(config, str(tmp_path / "run"))
    most = re.fullmatch(r"config.data.num_shards=200: the corpus in \S+ holds (\d+) documents, too "
                        r"few for its shards; set config.data.num_shards to at most \1",
                        str(error.value))  # fmt: skip
    assert most and 10 < int(most[1]) < 200, str(error.value)
    settings = {"data.eval_input": text, "data.eval_shards": 200}
    config = pretrain_config(shared_data, tmp_path / "two", 2, **settings)
    with pytest.raises(UserError, match=r"^config.data.eval_shards=200: the corpus in .*eval_data"):
        pretrain.run(config, str(tmp_path / "two"))


def test_missing_data_path_is_a_clear_error(shared_data, tmp_path):
    args = job_args(shared_data, tmp_path, steps=2, **{"data.input": "/no/such/dir/*.txt"})
    result = run_job(args)
    assert result.returncode != 0
    assert "/no/such/dir/*.txt" in result.stderr
    assert not (tmp_path / "data" / "manifest.json").exists()


@pytest.mark.full
def test_sigterm_saves_and_exits_cleanly_then_resume_is_exact(
    shared_data, prepared_wiki, twelve_steps, tmp_path
):
    steps, reference = 12, twelve_steps

    interrupted = with_prepared_data(prepared_wiki, tmp_path / "interrupted")
    settings = {**held_out_corpus(shared_data), "train.checkpoint_every": 1000}
    args = job_args(shared_data, interrupted, steps=steps, **settings)
    process, log = start_job(args, tmp_path / "log.txt")
    assert wait_for(lambda: "step 4/12" in (tmp_path / "log.txt").read_text(), 300, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == console.STOPPED_STATUS  # a finished run ends with 0
    log.close()
    stopped = [
        line for line in (tmp_path / "log.txt").read_text().splitlines() if "stopped" in line
    ]
    assert len(stopped) == 1 and "checkpoint saved: run the same command again" in stopped[0]
    saved = checkpoints.Checkpoints(interrupted, 1).latest_step()
    assert saved is not None and 4 <= saved < steps, saved

    result = run_job(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from step {saved}" in result.stderr
    want, _ = checkpoints.load_params(reference)
    got, meta = checkpoints.load_params(interrupted)
    assert meta["step"] == steps
    for a, b in zip(_leaves(got), _leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    assert scalars(interrupted, "train/loss")[-1] == scalars(reference, "train/loss")[-1]
    assert json.loads((interrupted / "eval_results.json").read_text()) == json.loads(
        (reference / "eval_results.json").read_text()
    )


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


# The README's recipe, bounded: a tenth of the tiny short run's steps on four Wikipedia files.
RECIPE_STEPS = 400


def readme_recipe(shared_data, workdir) -> tuple[list[str], list[str]]:
    """The README's pre-training and fill-mask commands, on four real Wikipedia files (for the
    user's text files), in `workdir`, for RECIPE_STEPS steps."""
    wiki = shared_data / "wikipedia" / "AA"
    pretraining, fill = docs_commands.after(
        docs_commands.PAGES[0], "**Pre-train on your own text**"
    )
    assert pretraining[:2] == ["python", "main.py"] and fill[:3] == [
        "python",
        "-m",
        "bert.fill_mask",
    ]
    pretraining = docs_commands.replaced(
        [sys.executable, *pretraining[1:]],
        workdir=str(workdir),
        config__data__input=",".join(f"{wiki}/wiki_0{i}" for i in range(4)),
        config__data__format="wikiextractor",
        config__train__steps=str(RECIPE_STEPS),
    )
    return pretraining, [sys.executable, *fill[1:3], str(workdir), *fill[4:]]


def _frequency_baseline(config, workdir) -> tuple[float, float]:
    """What a model predicting token frequencies reaches on the run's held-out batches: the
    cross-entropy of their masked labels under the unigram distribution of the masked labels
    the run trained on (its MLM loss), and the share of the most frequent one (its accuracy)."""
    from bert import objectives
    from bert.jobs import pretrain
    from input_pipeline import data_setup, pretraining

    data = data_setup.prepare_pretraining_data(pretrain.corpus(config), workdir)  # prepared
    batch, ids, steps = config.train.batch_size, data.tokenizer.special_ids, config.train.steps
    objective = objectives.create(config.objective, model_config(config.model, ids.vocab_size))
    settings = pretrain.batch_settings(config, objective)
    held_out = pretrain.eval_batches_of(data.eval_files, config, settings, ids, objective, batch)
    seen = pretraining.make_pretraining_dataset(data.train_files, settings, ids, batch_size=batch,
                                                seed=config.seed)  # fmt: skip

    def labels(batches):
        return np.concatenate([b["masked_lm_ids"][b["masked_lm_weights"] > 0] for b in batches])

    counts = np.bincount(labels(seen.take(steps).as_numpy_iterator()),
                         minlength=data.tokenizer.vocab_size) + 0.5  # fmt: skip
    targets = labels(held_out)
    cross_entropy = -np.log(counts[targets] / counts.sum()).mean()
    return float(cross_entropy), float(np.mean(targets == np.argmax(counts)))


@pytest.mark.full
def test_readme_recipe_learns_beyond_token_frequencies_and_fills_masks_with_words(
    shared_data, tmp_path
):
    """The README's pre-training command (the tiny model's short recipe: SentencePiece trained
    into the workdir) reaches a held-out MLM loss and accuracy that no model predicting token
    frequencies reaches, and its fill-mask command answers the README's blank with a word."""
    pretraining, fill = readme_recipe(shared_data, tmp_path)
    result = run_job(pretraining, devices=1)  # as the README's user runs it
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "data" / "sentencepiece.model").is_file()
    config = main_config(pretraining[2:])
    assert checkpoints.load_params(tmp_path)[1]["model"]["vocab_size"] == (
        config.data.sentencepiece_vocab_size
    )
    final = json.loads((tmp_path / "eval_results.json").read_text())
    entropy, top_share = _frequency_baseline(config, tmp_path)
    print(f"held out: {final}; frequency baseline: loss {entropy:.3f}, accuracy {top_share:.3f}")
    assert final["mlm_loss"] < entropy - MARGIN_LOSS, (final, entropy)
    assert final["mlm_accuracy"] > top_share + MARGIN_ACCURACY, (final, top_share)
    answer = subprocess.run(fill, cwd=ROOT, capture_output=True, text=True)
    assert answer.returncode == 0, answer.stderr[-3000:]
    print(answer.stdout)
    top = re.search(r"mask 1: (\S+) ", answer.stdout).group(1)
    assert top.isalpha(), answer.stdout


def continued(shared_data, twelve_steps, workdir, steps: int, **overrides):
    """main.py arguments continuing a copy of the twelve-step run in `workdir` to `steps`."""
    shutil.copytree(twelve_steps, workdir, dirs_exist_ok=True)
    settings = {**held_out_corpus(shared_data), "train.checkpoint_every": 2, **overrides}
    return job_args(shared_data, workdir, steps=steps, **settings)


@pytest.mark.full
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    shared_data, twelve_steps, tmp_path
):
    # The same run continued with a learning rate that blows the parameters up.
    args = continued(shared_data, twelve_steps, tmp_path, 18, **{"train.learning_rate": 1e30})
    result = run_job(args)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite loss") and "lower train.learning_rate" in last
    assert "The last good checkpoint is step 12" in last
    assert checkpoints.Checkpoints(tmp_path, 1).latest_step() == 12


@pytest.mark.full
def test_changing_the_optimizer_of_a_run_is_a_clear_error(shared_data, twelve_steps, tmp_path):
    result = run_job(
        continued(shared_data, twelve_steps, tmp_path, 14, **{"train.optimizer": "adamw"})
    )
    assert result.returncode != 0
    assert "cannot restore" in result.stderr and "train.optimizer" in result.stderr


@pytest.mark.full
def test_eval_input_and_evaluate_mode_agree(shared_data, twelve_steps, tmp_path):
    """A run holding out a separate corpus (data.eval_input), then mode=evaluate of its final
    checkpoint on that corpus: the same held-out batches give the same metrics."""
    trained = json.loads((twelve_steps / "eval_results.json").read_text())
    assert (twelve_steps / "eval_data" / "manifest.json").is_file()
    corpus = held_out_corpus(shared_data)["data.eval_input"]
    args = job_args(shared_data, tmp_path / "eval", steps=12,
                    **{"data.input": corpus, "data.num_shards": 1, "data.tokenizer": "",
                       "init_from": twelve_steps})  # fmt: skip
    args[2] = "--config=configs/bert_base.py:size=tiny,mode=evaluate"
    result = run_job(args)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert not (tmp_path / "eval" / "checkpoints").exists()  # nothing was trained
    for name in ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "mlm_perplexity"):
        assert evaluated[name] == pytest.approx(trained[name], rel=1e-5), name
    assert evaluated["mlm_perplexity"] == pytest.approx(np.exp(evaluated["mlm_loss"]), rel=1e-6)


def test_evaluate_mode_without_a_checkpoint_is_a_clear_error(shared_data, tmp_path):
    args = job_args(shared_data, tmp_path, steps=2)
    args[2] = "--config=configs/bert_base.py:size=tiny,mode=evaluate"
    result = run_job(args)
    assert result.returncode != 0
    assert "mode=evaluate needs config.init_from" in result.stderr
