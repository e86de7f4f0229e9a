"""Packed fine-tuning (config.train.pack): each random batch's sentences packed whole into rows
of max_seq_length. Every token's tagging logits equal HF PyTorch's on its sentence alone; a
packed NER run trains to the same parameters and predictions as the same batches unpacked;
a resumed packed run is bitwise identical to an uninterrupted one; bad settings are one clear
error."""

import logging
import shutil

import numpy as np
import pytest
import torch
import trajectory
import transformers
from flax import traverse_util
from test_buckets import COMPILE_LOGGER, scalars
from test_finetune_jobs import quick

from bert import pretrained
from bert.finetuning import packing
from bert.heads import BertForTokenClassification
from bert.jobs import glue as glue_job
from bert.jobs import ner as ner_job
from bert.tasks import ner
from bert.training import checkpoints
from configs import glue as glue_config
from configs import ner as ner_config
from util.errors import UserError

SEQ = 64


def test_first_fit_places_every_sequence_once_within_capacity():
    lengths = np.random.default_rng(0).integers(3, 65, 200)
    rows = packing.first_fit(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    assert len(rows) <= -(-lengths.sum() // 64) * 1.1 + 1  # first-fit decreasing: near full
    assert packing.first_fit(lengths, 64) == rows  # deterministic
    with pytest.raises(ValueError, match="a sequence of 65 tokens does not fit a row of 64"):
        packing.first_fit(np.array([3, 65]), 64)


def test_pack_lays_sequences_back_to_back_with_their_own_positions():
    lengths = np.array([3, 2, 4])
    ids = np.array([[1, 2, 3, 0, 0, 0], [4, 5, 0, 0, 0, 0], [6, 7, 8, 9, 0, 0]], np.int32)
    label = np.where(ids > 0, ids * 10, -1).astype(np.int32)
    rows = packing.first_fit(lengths, 6)
    assert rows == [[2, 1], [0]]  # the longest first, the shortest into the first row with room
    out = packing.pack({"input_ids": ids, "label": label}, lengths, rows, 3, {"label": -1})
    np.testing.assert_array_equal(
        out["input_ids"], [[6, 7, 8, 9, 4, 5], [1, 2, 3, 0, 0, 0], [0] * 6]
    )
    np.testing.assert_array_equal(
        out["label"], [[60, 70, 80, 90, 40, 50], [10, 20, 30, -1, -1, -1], [-1] * 6]
    )
    np.testing.assert_array_equal(
        out["position_ids"], [[0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]
    )


def test_packed_tagging_logits_equal_hf_on_each_sentence_alone(shared_data, tiny_hf):
    """24 CoNLL sentences packed into rows of 64 (plus an empty row): every real token's logits
    equal HF BertForTokenClassification's on its sentence alone within 1e-5, and the empty
    row's are finite. Without the packed positions (one sequence per row) they differ."""
    loaded = pretrained.load(str(tiny_hf), "")
    sentences = ner.read_conll(shared_data / "conll2003" / "valid.txt")[:24]
    labels = ner.label_list(sentences)
    feats = ner.convert_sentences_to_features(sentences, labels, loaded.tokenizer, SEQ)
    lengths = feats["input_mask"].sum(axis=1)
    params = trajectory.classifier_params(loaded.config, {"bert": loaded.encoder}, len(labels))
    keys = ("input_ids", "segment_ids", "input_mask")
    rows = packing.first_fit(lengths, SEQ)
    assert len(rows) < len(sentences) / 2, "several sentences share each row"
    packed = packing.pack({k: feats[k] for k in keys}, lengths, rows, len(rows) + 1, {})
    model = BertForTokenClassification(loaded.config, len(labels))
    inputs = [packed[k] for k in keys]
    ours = np.asarray(model.apply({"params": params}, *inputs, position_ids=packed["position_ids"]))
    unpacked = np.asarray(model.apply({"params": params}, *inputs))
    hf = trajectory.hf_head(transformers.BertForTokenClassification, tiny_hf, params["classifier"])
    worst, worst_unpacked = 0.0, 0.0
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            n = int(lengths[i])
            with torch.no_grad():
                alone = hf(input_ids=torch.tensor(feats["input_ids"][i : i + 1, :n])).logits[0]
            alone = alone.numpy()
            worst = max(worst, np.abs(ours[r, at : at + n] - alone).max())
            worst_unpacked = max(worst_unpacked, np.abs(unpacked[r, at : at + n] - alone).max())
            at += n
    assert worst < 1e-5, worst
    assert worst_unpacked > 1e-2, worst_unpacked  # the comparison can fail
    assert np.isfinite(ours[-1]).all()


def ner_config_for(shared_data, init_from, pack: bool, steps: int = 4, dropout: bool = False):
    config = quick(ner_config.get_config(), init_from, steps=steps, seq=SEQ, eval_limit=60)
    config.data_dir = str(shared_data / "conll2003")
    config.train.pack = pack
    config.train.group_by_length = 0  # the same random batches, packed or not
    if not dropout:  # dropout masks depend on the batch's shape
        config.model.hidden_dropout = config.model.attention_dropout = 0.0
    return config


@pytest.mark.full
def test_packed_ner_run_equals_unpacked(shared_data, tiny_hf, tmp_path, caplog):
    """4 steps on the same random batches of 16 CoNLL sentences, length buckets of 16 or packed
    into rows of 64: the same parameters within 1e-6, the same prediction files and metrics,
    one compiled train step (compiled ahead), and a padding fraction far below the buckets'."""
    caplog.set_level(logging.DEBUG, logger=COMPILE_LOGGER)
    runs = {}
    for pack in (False, True):
        caplog.clear()
        workdir = tmp_path / str(pack)
        results = ner_job.run(ner_config_for(shared_data, tiny_hf, pack), str(workdir))
        params, _ = checkpoints.load_params(workdir, 4)
        compiled = [
            r
            for r in caplog.records
            if r.msg.startswith("Compiling") and r.args[0] == "jit(train_step)"
        ]
        assert all(r.threadName.startswith("compile-ahead") for r in compiled)
        shapes = [{a.shape for a in r.args[1] if a.ndim == 2 and a.dtype == np.int32}
                  for r in compiled]  # fmt: skip
        padding = scalars(workdir, "train/padding_fraction")
        runs[pack] = results, traverse_util.flatten_dict(params), shapes, workdir, padding
    (plain, plain_params, _, plain_dir, plain_padding) = runs[False]
    (packed, packed_params, packed_shapes, packed_dir, packed_padding) = runs[True]
    assert packed == plain
    for key, value in plain_params.items():
        np.testing.assert_allclose(packed_params[key], value, rtol=0, atol=1e-6, err_msg=str(key))
    assert (packed_dir / "predictions" / "valid.txt").read_text() == (
        plain_dir / "predictions" / "valid.txt"
    ).read_text()
    assert all(len(s) == 1 for s in packed_shapes), packed_shapes  # every array [rows, 64]
    rows = [next(iter(s))[0] for s in packed_shapes]
    assert rows == [8], rows  # one shape: an average batch's rows, on 8 devices
    for step, fraction in packed_padding.items():
        assert fraction < plain_padding[step] - 0.2, (step, fraction, plain_padding[step])


@pytest.mark.full
def test_resumed_packed_run_equals_uninterrupted(shared_data, tiny_hf, tmp_path):
    """6 packed steps with dropout; the checkpoint of step 6 dropped, the run resumes at step 4
    and ends with the same parameters, bitwise, and the same predictions."""
    config = ner_config_for(shared_data, tiny_hf, True, steps=6, dropout=True)
    ner_job.run(config, str(tmp_path / "full"))
    full, _ = checkpoints.load_params(tmp_path / "full", 6)
    shutil.copytree(tmp_path / "full", tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "6")
    (tmp_path / "run" / "predictions" / "valid.txt").unlink()
    ner_job.run(config, str(tmp_path / "run"))
    resumed, meta = checkpoints.load_params(tmp_path / "run", 6)
    assert meta["step"] == 6
    flat = traverse_util.flatten_dict(resumed)
    for key, value in traverse_util.flatten_dict(full).items():
        np.testing.assert_array_equal(flat[key], value, err_msg=str(key))
    assert (tmp_path / "run" / "predictions" / "valid.txt").read_text() == (
        tmp_path / "full" / "predictions" / "valid.txt"
    ).read_text()


def test_packing_settings_are_clear_errors(shared_data, tiny_hf, tmp_path):
    config = ner_config_for(shared_data, tiny_hf, True)
    config.train.group_by_length = 50
    with pytest.raises(UserError, match="config.train.group_by_length=50 would sort them by"):
        ner_job.run(config, str(tmp_path / "a"))
    config.train.group_by_length, config.train.pack_length = 0, 0
    with pytest.raises(UserError, match=r"config.train.pack_length=0 must be 1 or more \(tokens\)"):
        ner_job.run(config, str(tmp_path / "a"))
    config = quick(glue_config.get_config("task=sst2"), tiny_hf)
    config.data_dir = str(shared_data / "glue" / "SST-2")
    config.train.pack, config.train.group_by_length = True, 0
    with pytest.raises(UserError, match="the glue/sst2 job cannot pack its rows"):
        glue_job.run(config, str(tmp_path / "b"))
