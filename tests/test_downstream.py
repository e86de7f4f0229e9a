"""Downstream probes during pre-training (config.downstream, bert/jobs/downstream.py): short
fine-tunes of the encoder being pre-trained, logged beside the held-out MLM figures."""

import json

import pytest

from bert.jobs import downstream, glue, pretrain
from tests.test_pretrain_job import pretrain_config, scalars, with_prepared_data
from util.errors import UserError


def probe_settings(shared_data, **overrides) -> dict:
    """A tiny run's probes: SST-2 and STS benchmark, a few steps on a few examples."""
    settings = {
        "train.eval_every": 2,
        "downstream.every": 2,
        "downstream.sst2_dir": shared_data / "glue" / "SST-2",
        "downstream.stsb_train": shared_data / "stsbenchmark" / "sts-train.csv",
        "downstream.stsb_dev": shared_data / "stsbenchmark" / "sts-dev.csv",
        "downstream.train_limit": 64,
        "downstream.eval_limit": 64,
        "downstream.steps": 4,
        "downstream.batch_size": 16,
        "downstream.max_seq_length": 16,  # two length buckets to compile (8 and 16)
    }
    settings.update(overrides)
    return settings


@pytest.mark.full
def test_probes_are_logged_at_the_start_every_n_steps_and_the_end_as_the_jobs_score(
    shared_data, prepared_wiki, tmp_path
):
    """Probes every 4 steps of a 4-step run evaluated every 2: at steps 0 and 4, not with the
    evaluation at step 2; they reach TensorBoard and eval_results.json, the last equals the GLUE
    and embeddings jobs run on the finished workdir with the same settings (the in-memory
    encoder is the checkpoint's), and the probes keep their results only."""
    workdir = with_prepared_data(prepared_wiki, tmp_path / "run")
    settings = probe_settings(shared_data, **{"downstream.every": 4})
    config = pretrain_config(shared_data, workdir, steps=4, **settings)
    results = pretrain.run(config, str(workdir))
    for tag in ("eval/downstream/sst2/accuracy", "eval/downstream/stsb/spearman"):
        assert [step for step, _ in scalars(workdir, tag)] == [0, 4], tag
    assert [step for step, _ in scalars(workdir, "eval/mlm_loss")] == [2, 4]
    final = results["downstream"]
    assert json.loads((workdir / "eval_results.json").read_text())["downstream"] == final
    assert 0.0 <= final["sst2"]["accuracy"] <= 1.0 and -1.0 <= final["stsb"]["spearman"] <= 1.0
    assert not (workdir / "downstream" / "step_2").exists()
    for step in (0, 4):
        for name in ("sst2", "stsb"):
            probe = workdir / "downstream" / f"step_{step}" / name
            assert (probe / "eval_results.json").is_file()
            assert not (probe / "checkpoints").exists()

    from bert.jobs import embeddings

    for name, job in (("sst2", glue.run), ("stsb", embeddings.run)):
        job_config = downstream._job_config(name, config.downstream)
        job_config.init_from = str(workdir)  # its newest checkpoint: step 4
        again = job(job_config, str(tmp_path / f"{name}_from_workdir"))
        split, metric = downstream.TASKS[name]
        assert again[split][metric] == pytest.approx(final[name][metric], abs=1e-6), name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"downstream.every": 3}, "downstream.every=3 must be a multiple of config.train.eval"),
        ({"downstream.tasks": "sst2,cola"}, "downstream.tasks='sst2,cola': name one or more"),
        ({"downstream.stsb_train": ""}, "downstream.stsb_train is empty: the stsb probe"),
        ({"downstream.sst2_dir": "/nowhere"}, "downstream.sst2_dir: /nowhere/train.tsv is not"),
        ({"downstream.steps": 0}, "downstream.steps=0 must be at least 1"),
        ({"downstream.every": -2}, "downstream.every=-2 must be 0 (no probes) or more"),
    ],
)
def test_bad_probe_settings_stop_before_the_data_is_prepared(
    shared_data, tmp_path, overrides, message
):
    config = pretrain_config(
        shared_data, tmp_path, steps=4, **probe_settings(shared_data, **overrides)
    )
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pretrain.run(config, str(tmp_path))
    assert not (tmp_path / "data").exists()
