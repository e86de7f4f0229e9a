"""A packed bi-encoder (config.train.pack for the embeddings job): every side's sentences of a
batch packed whole into shared rows, one encoder pass. Each sentence's embedding equals HF
BertModel's hidden states on the sentence alone pooled by sentence-transformers' own Pooling
module; the packed batches place every text once; the loss and gradient of a packed batch equal
the same batch's unpacked, and a packed run compiles one step. (The job packs by default:
tests/test_embeddings_job.py resumes a packed run.)"""

import logging

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util
from test_buckets import COMPILE_LOGGER
from test_embeddings_job import quick

from bert import pretrained
from bert.biencoder import BertBiEncoder
from bert.finetuning import batches, buckets, order
from bert.jobs import embeddings as embeddings_job
from bert.jobs import settings
from bert.tasks import sts
from bert.training import checkpoints, sharding

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


TOGETHER, APART = ((0, 1),), ((0,), (1,))  # side groups: both sides in shared rows, or apart


def packed_sides(arrays, batch: int, num_rows: int, groups=TOGETHER) -> batches.PackedSides:
    keys = embeddings_job.side_keys(2)
    sides = (keys[:3], keys[3:])
    lengths = np.stack([arrays[s[2]].sum(axis=1) for s in sides], axis=1)  # [rows, sides]
    plan = order.RowOrder(len(lengths), batch, 4, seed=0)
    n = len(groups)
    return batches.PackedSides(plan, lengths, arrays, sides, ("label",), groups, (ROW,) * n,
                               ((num_rows, num_rows),) * n, 1, 8, None)  # fmt: skip


@pytest.mark.parametrize("groups", [TOGETHER, APART], ids=["together", "apart"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_packed_embeddings_equal_st_pooling_of_each_sentence_alone(
    shared_data, tiny_hf, pooling, groups
):
    """12 STS pairs' 24 sentences packed into rows of 64 (and empty rows), both sides together
    or each side apart: every embedding equals sentence-transformers' pooling of HF's hidden
    states on the sentence alone within 1e-5. With one sequence's positions per row
    (sentences attending across a row) they differ."""
    loaded = pretrained.load(str(tiny_hf), "")
    arrays = sts_sides(shared_data, loaded.tokenizer, 12, ROW)
    batch = packed_sides(arrays, 12, 6, groups).local(0)
    rows = order.RowOrder(12, 12, 4, seed=0).rows(0)
    assert len(np.unique(batch["pack0_sequence_ids"][0])) > 2, "several sentences share a row"
    model = BertBiEncoder(loaded.config, pooling, normalize=True, packed=True)
    params = {"bert": loaded.encoder}
    keys = batches.packed_keys(len(groups))
    ours = np.asarray(model.apply({"params": params}, *(batch[k] for k in keys)))
    one_per_row = {k: np.tile(np.arange(ROW), (len(v), 1)) if k.endswith("position_ids") else v
                   for k, v in batch.items()}  # fmt: skip
    crossed = np.asarray(model.apply({"params": params}, *(one_per_row[k] for k in keys)))
    for side in range(2):
        ids, mask = (arrays[f"text{side}_{k}"][rows] for k in ("input_ids", "input_mask"))
        alone = [r[: int(n)] for r, n in zip(ids, mask.sum(axis=1), strict=True)]
        want = st_embeddings(tiny_hf, alone, pooling)
        np.testing.assert_allclose(ours[:, side], want, rtol=0, atol=1e-5)
        assert np.abs(crossed[:, side] - want).max() > 1e-3  # the comparison can fail


@pytest.mark.parametrize("groups", [TOGETHER, APART], ids=["together", "apart"])
def test_packed_sides_place_every_text_once(shared_data, tiny_hf, groups):
    """Each step's 2 x 16 texts packed into rows of 64, together or apart: every text's tokens
    appear once in its group's rows, where `starts` says, with positions from 0; padding
    belongs to no text; labels stay per row."""
    loaded = pretrained.load(str(tiny_hf), "")
    arrays = sts_sides(shared_data, loaded.tokenizer, 64, ROW)
    steps = packed_sides(arrays, 16, 8, groups)
    for step in range(4):
        batch, rows = steps.local(step), steps.order.rows(step)
        assert steps.shape_key(step) == ((8, ROW),) * len(groups)
        np.testing.assert_array_equal(batch["label"], arrays["label"][rows])
        for g, group in enumerate(groups):
            got = {k: batch[f"pack{g}_{k}"] for k in batches.PACKED_INPUTS}
            assert got["input_ids"].shape == (8, ROW) and got["starts"].shape == (16, len(group))
            flat = {k: got[k].reshape(-1) for k in ("input_ids", "position_ids", "sequence_ids")}
            for b, row in enumerate(rows):
                for j, side in enumerate(group):
                    n = int(arrays[f"text{side}_input_mask"][row].sum())
                    at = int(got["starts"][b, j])
                    np.testing.assert_array_equal(
                        flat["input_ids"][at : at + n], arrays[f"text{side}_input_ids"][row, :n]
                    )
                    np.testing.assert_array_equal(flat["position_ids"][at : at + n], np.arange(n))
                    assert (flat["sequence_ids"] == len(group) * b + j).sum() == n
            real = got["input_mask"].reshape(-1) > 0
            assert (flat["sequence_ids"][~real] == len(group) * len(rows)).all()
            assert real.sum() == sum(arrays[f"text{s}_input_mask"][rows].sum() for s in group)


def test_side_groups_follow_the_length_ratio():
    """Sides of similar mean lengths share rows; a short side beside one 1.5 times as long or
    longer (a question beside its paragraph) is packed apart."""
    assert buckets.side_groups(np.array([[10, 14], [12, 12]]), 1.5) == TOGETHER
    assert buckets.side_groups(np.array([[10, 30], [12, 36]]), 1.5) == APART
    assert buckets.side_groups(np.array([[10, 15, 15]]), 1.5) == ((0,), (1,), (2,))


def packed_config(tiny_hf, shared_data, pack: bool, data: str = "sts"):
    config = quick(tiny_hf, shared_data / "stsbenchmark" / "sts-train.csv", steps=4)
    if data == "squad":  # questions beside paragraphs: each side packed apart
        config.train_file = str(shared_data / "squad" / "dev-v1.1.json")
        config.train_format, config.train_kind = "squad", "pairs"
        config.eval_file, config.max_seq_length = "", 64
    config.train.pack, config.train.group_by_length = pack, 0  # the same random batches
    # dropout masks depend on the batch's shape
    config.model.hidden_dropout = config.model.attention_dropout = 0.0
    return config


@pytest.mark.parametrize("data", [pytest.param("sts", marks=pytest.mark.full), "squad"])
def test_packed_loss_and_gradient_equal_unpacked(shared_data, tiny_hf, data):
    """The job's first batch of 16 pairs (MNRL, symmetric, Matryoshka) on 8 devices, each side
    in its length bucket or packed (STS pairs' sides together, SQuAD's questions and
    paragraphs apart), and packed with the cached loss in 2 mini-batches of 8 (each packed
    into its own rows): the same loss within 1e-6 and the same gradient within 1e-5 of its
    largest entry."""
    got = {}
    for pack, mini in ((False, 0), (True, 0), (True, 8)):
        config = packed_config(tiny_hf, shared_data, pack, data)
        config.mini_batch_size = mini
        spec, encoder = embeddings_job.make_spec(config)
        lengths = buckets.lengths_of({k: spec.train[k] for k in spec.input_keys}, 1)
        run = settings.finetuning(config)
        rows = order.make_row_order(len(lengths), run.run.batch_size, run.steps, run.epochs,
                                    run.group_by_length, run.run.seed, lengths)  # fmt: skip
        mesh = sharding.make_mesh(config.mesh)
        objective, steps = batches.train_batches(spec, run, rows, lengths, mesh)
        batch = steps.batches(0)(0)
        grad = jax.value_and_grad(lambda p, b, o=objective: o.loss_fn(p, b, None, None)[0])
        got[pack, mini] = jax.device_get(jax.jit(grad)({"bert": encoder.encoder}, batch))
        assert any(k.startswith("pack1_") for k in batch) == (pack and data == "squad")
        assert objective.mini_batches == (2 if mini else 0)
        if mini:  # each mini-batch's texts start within its own rows
            rows, length = batch["pack0_input_ids"].shape
            assert batch["pack0_starts"].max() < rows // 2 * length
    loss, grads = got[False, 0]
    largest = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))
    for packed_loss, packed_grads in (got[True, 0], got[True, 8]):
        assert packed_loss == pytest.approx(loss, rel=1e-6)
        for (path, value), packed in zip(
            jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(packed_grads), strict=True
        ):
            np.testing.assert_allclose(packed, value, atol=1e-5 * largest, err_msg=str(path))


# The int32 [rows, length] arrays of the packed run's one compiled train step, and how many
# steps the unpacked run compiles. STS: both sides share rows of 32 (`starts` is pruned: mean
# pooling reads only its shape); unpacked, one bucket of 16. SQuAD (length 64): questions
# packed apart into 8 rows (one per device), paragraphs into 16; unpacked, the questions'
# bucket changes between steps.
COMPILED = {"sts": ([{(16, 32)}], 1), "squad": ([{(8, 64), (16, 64)}], 2)}


@pytest.mark.full
@pytest.mark.parametrize("data", ["sts", "squad"])
def test_packed_run_compiles_one_step(shared_data, tiny_hf, tmp_path, caplog, data):
    """4 steps on the same random batches, each side in its length bucket or packed: the packed
    run compiles one train step, of the shapes above, trains (its parameters move) and scores
    STS dev as the unpacked one within 1e-3."""
    caplog.set_level(logging.DEBUG, logger=COMPILE_LOGGER)
    results, shapes = {}, {}
    for pack in (False, True):
        caplog.clear()
        workdir = tmp_path / str(pack)
        config = packed_config(tiny_hf, shared_data, pack, data)
        results[pack] = embeddings_job.run(config, str(workdir))
        shapes[pack] = [
            {a.shape for a in r.args[1] if a.ndim == 2 and a.dtype == np.int32}
            for r in caplog.records
            if r.msg.startswith("Compiling") and r.args[0] == "jit(train_step)"
        ]  # fmt: skip
    assert (shapes[True], len(shapes[False])) == COMPILED[data], shapes
    for name, value in results[False].get("sts_dev", {}).items():
        assert results[True]["sts_dev"][name] == pytest.approx(value, abs=1e-3), name
    params = traverse_util.flatten_dict(checkpoints.load_params(tmp_path / "True", 4)[0])
    start = pretrained.load(str(tiny_hf)).encoder["embeddings"]["word_embeddings"]
    assert not np.array_equal(params[("bert", "embeddings", "word_embeddings")], start)
