"""A packed bi-encoder (config.train.pack for the embeddings job): every side's sentences of a
batch packed whole into shared rows, one encoder pass. Each sentence's embedding equals HF
BertModel's hidden states on the sentence alone pooled by sentence-transformers' own Pooling
module; the packed batches place every text once; a packed run trains to the parameters of the
same batches unpacked and compiles one step. (The job packs by default: tests/test_embeddings_job.py
resumes a packed run.)"""

import logging

import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util
from test_buckets import COMPILE_LOGGER
from test_embeddings_job import quick

from bert import pretrained
from bert.biencoder import BertBiEncoder
from bert.jobs import batches
from bert.jobs import embeddings as embeddings_job
from bert.tasks import features, sts
from bert.training import checkpoints

ROW = 64
ST_POOLING = {"mean": "mean", "cls": "cls", "max": "max"}


def st_embeddings(hf_dir, ids: np.ndarray, pooling: str) -> np.ndarray:
    """sentence-transformers' Pooling (and Normalize) over HF BertModel's last hidden states,
    one sentence at a time, without padding."""
    from sentence_transformers import models

    bert = transformers.BertModel.from_pretrained(hf_dir, add_pooling_layer=False).eval()
    pool = models.Pooling(bert.config.hidden_size, pooling_mode=ST_POOLING[pooling])
    out = []
    with torch.no_grad():
        for row in ids:
            tokens = torch.tensor(row[None])
            mask = torch.ones_like(tokens)
            hidden = bert(input_ids=tokens, attention_mask=mask).last_hidden_state
            pooled = pool({"token_embeddings": hidden, "attention_mask": mask})
            out.append(models.Normalize()(pooled)["sentence_embedding"][0].numpy())
    return np.stack(out)


def sts_sides(shared_data, tokenizer, pairs: int, seq: int) -> dict[str, np.ndarray]:
    rows = sts.read_sts_benchmark(shared_data / "stsbenchmark" / "sts-train.csv")[:pairs]
    sides = [[p.sentence1 for p in rows], [p.sentence2 for p in rows]]
    labels = np.array([p.score for p in rows], np.float32)
    return embeddings_job.training_features(tokenizer, sides, labels, seq)


def packed_sides(arrays: dict[str, np.ndarray], batch: int, num_rows: int) -> batches.PackedSides:
    keys = embeddings_job.side_keys(2)
    sides = (keys[:3], keys[3:])
    lengths = np.stack([arrays[s[2]].sum(axis=1) for s in sides], axis=1)  # [rows, sides]
    order = batches.RowOrder(len(lengths), batch, 4, seed=0)
    return batches.PackedSides(order, lengths, arrays, sides, ("label",), 1, num_rows, ROW, 8, None)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_packed_embeddings_equal_st_pooling_of_each_sentence_alone(shared_data, tiny_hf, pooling):
    """12 STS pairs' 24 sentences packed into rows of 64 (and an empty row): every embedding
    equals sentence-transformers' pooling of HF's hidden states on the sentence alone within
    1e-5. Without the packed positions (sentences attending across a row) they differ."""
    loaded = pretrained.load(str(tiny_hf), "")
    arrays = sts_sides(shared_data, loaded.tokenizer, 12, ROW)
    steps = packed_sides(arrays, 12, 1)
    batch = steps.local(0)
    rows = steps.order.rows(0)
    assert batch["input_ids"].shape[0] < 24 / 2, "several sentences share each row"
    model = BertBiEncoder(loaded.config, pooling, normalize=True)
    params = {"bert": loaded.encoder}
    inputs = [batch[k] for k in features.ENCODER_INPUTS]
    places = {"sequence_ids": batch["sequence_ids"], "starts": batch["starts"]}
    ours = model.apply({"params": params}, *inputs, position_ids=batch["position_ids"], **places)
    crossed = model.apply({"params": params}, *inputs, **places)  # no packed positions
    ours, crossed = np.asarray(ours), np.asarray(crossed)
    for side in range(2):
        ids, mask = (arrays[f"text{side}_{k}"][rows] for k in ("input_ids", "input_mask"))
        alone = [r[: int(n)] for r, n in zip(ids, mask.sum(axis=1), strict=True)]
        want = st_embeddings(tiny_hf, alone, pooling)
        np.testing.assert_allclose(ours[:, side], want, rtol=0, atol=1e-5)
        assert np.abs(crossed[:, side] - want).max() > 1e-3  # the comparison can fail


def test_packed_sides_place_every_text_once(shared_data, tiny_hf):
    """Each step's 2 x 16 texts packed into rows of 64: every text's tokens appear once, where
    `starts` says, with positions from 0; padding belongs to no text; labels stay per row."""
    loaded = pretrained.load(str(tiny_hf), "")
    arrays = sts_sides(shared_data, loaded.tokenizer, 64, ROW)
    steps = packed_sides(arrays, 16, 8)
    for step in range(4):
        batch, rows = steps.local(step), steps.order.rows(step)
        assert batch["input_ids"].shape == (8, ROW) and steps.shape_key(step) == (8, ROW)
        np.testing.assert_array_equal(batch["label"], arrays["label"][rows])
        flat = {k: batch[k].reshape(-1) for k in ("input_ids", "position_ids", "sequence_ids")}
        for b, row in enumerate(rows):
            for side in range(2):
                n = int(arrays[f"text{side}_input_mask"][row].sum())
                at = int(batch["starts"][b, side])
                np.testing.assert_array_equal(
                    flat["input_ids"][at : at + n], arrays[f"text{side}_input_ids"][row, :n]
                )
                np.testing.assert_array_equal(flat["position_ids"][at : at + n], np.arange(n))
                assert (flat["sequence_ids"] == 2 * b + side).sum() == n
        real = batch["input_mask"].reshape(-1) > 0
        assert (flat["sequence_ids"][~real] == 2 * len(rows)).all()
        assert real.sum() == sum(arrays[f"text{s}_input_mask"][rows].sum() for s in range(2))


def packed_config(tiny_hf, shared_data, pack: bool, steps: int = 4, dropout: bool = False):
    config = quick(tiny_hf, shared_data / "stsbenchmark" / "sts-train.csv", steps=steps)
    config.train.pack, config.train.group_by_length = pack, 0  # the same random batches
    if not dropout:  # dropout masks depend on the batch's shape
        config.model.hidden_dropout = config.model.attention_dropout = 0.0
    return config


def test_packed_run_equals_unpacked(shared_data, tiny_hf, tmp_path, caplog):
    """4 MNRL steps (symmetric, Matryoshka) on the same random batches of 16 pairs, each side
    in its length bucket or every side packed into rows: the same parameters within 1e-6 and
    the same STS dev metrics."""
    caplog.set_level(logging.DEBUG, logger=COMPILE_LOGGER)
    results, params, shapes = {}, {}, {}
    for pack in (False, True):
        caplog.clear()
        workdir = tmp_path / str(pack)
        results[pack] = embeddings_job.run(packed_config(tiny_hf, shared_data, pack), str(workdir))
        params[pack] = traverse_util.flatten_dict(checkpoints.load_params(workdir, 4)[0])
        shapes[pack] = [
            {a.shape for a in r.args[1] if a.ndim == 2 and a.dtype == np.int32}
            for r in caplog.records
            if r.msg.startswith("Compiling") and r.args[0] == "jit(train_step)"
        ]  # fmt: skip
    for key, value in params[False].items():
        np.testing.assert_allclose(params[True][key], value, rtol=0, atol=1e-6, err_msg=str(key))
    for name, value in results[False]["sts_dev"].items():
        assert results[True]["sts_dev"][name] == pytest.approx(value, abs=1e-3), name
    # It trained: the parameters moved.
    start = pretrained.load(str(tiny_hf)).encoder["embeddings"]["word_embeddings"]
    assert not np.array_equal(params[True][("bert", "embeddings", "word_embeddings")], start)
    # one step compiled, on packed rows of 32 tokens (`starts` is pruned: mean pooling reads
    # only its shape); unpacked, each side in its bucket of 16
    assert shapes == {True: [{(16, 32)}], False: [{(16, 16)}]}, shapes
