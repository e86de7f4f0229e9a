"""Batches without a repeated text (config.train.no_duplicates, bert/finetuning/order.py): on the
same permutation the batches are sentence-transformers' NoDuplicatesBatchSampler's; over epochs
of SQuAD question/paragraph pairs, where every paragraph comes with several questions, no batch
holds a text twice (random batches do, often); the order is a function of the seed and the
epoch, so a resumed run (a new order, asked from any step) takes the same rows."""

import numpy as np
import pytest
import torch
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

from bert.finetuning import order
from bert.jobs import embeddings as embeddings_job
from bert.tasks import squad_pairs
from util.errors import UserError

BATCH = 64


class _Rows:
    """What the sampler reads of a `datasets.Dataset`: column names, length, rows as dicts."""

    column_names = ["anchor", "positive"]

    def __init__(self, sides):
        self.sides = sides

    def __len__(self):
        return len(self.sides[0])

    def __getitem__(self, index):
        return {name: side[index] for name, side in zip(self.column_names, self.sides, strict=True)}


@pytest.fixture(scope="module")
def squad(shared_data):
    """SQuAD v1.1 dev as (question, paragraph) pairs: 10,570 rows, 2,067 paragraphs."""
    pairs = squad_pairs.read_squad_pairs(shared_data / "squad" / "dev-v1.1.json")
    sides = [list(pairs.anchors), list(pairs.positives)]
    return sides, embeddings_job.text_ids(sides)


@pytest.mark.parametrize("batch", [BATCH, 1024])
def test_batches_equal_sentence_transformers_sampler(squad, batch):
    """Batches of 1,024 cannot all be filled: the rows left over are dropped alike."""
    sides, ids = squad
    sampler = NoDuplicatesBatchSampler(_Rows(sides), batch, drop_last=True,
                                       generator=torch.Generator(), seed=7)  # fmt: skip
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        theirs = list(sampler)
        generator = torch.Generator().manual_seed(7 + epoch)
        permutation = torch.randperm(len(ids), generator=generator, dtype=torch.int32).numpy()
        ours = order.distinct_batches(permutation, ids, batch)
        assert ours.tolist() == theirs
        assert len(theirs) == len(ids) // batch - (batch > BATCH)


def test_no_batch_repeats_a_text_and_the_order_is_seeded(squad):
    sides, ids = squad
    assert len(ids) == 10570 and len(set(sides[1])) == 2067
    plan = order.make_row_order(len(ids), BATCH, 0, 2.5, 0, seed=3, texts=ids)
    first = plan.steps_per_epoch
    assert plan.total_steps == 2 * first + first // 2 + 1
    seen: dict[int, list] = {}
    for step in range(plan.total_steps):
        rows = plan.rows(step)
        assert len(np.unique(ids[rows])) == 2 * BATCH, step  # no text twice, across sides
        epoch, _ = plan._place(step)
        seen.setdefault(epoch, []).extend(rows.tolist())
    assert all(len(rows) == len(set(rows)) for rows in seen.values())  # a row once per epoch
    # A new order (a resumed run's) takes the same rows at any step; another seed other rows.
    again = order.make_row_order(len(ids), BATCH, 0, 2.5, 0, seed=3, texts=ids)
    for step in (plan.total_steps - 1, first + 5, 3):
        np.testing.assert_array_equal(again.rows(step), plan.rows(step))
    other = order.make_row_order(len(ids), BATCH, 0, 2.5, 0, seed=4, texts=ids)
    assert not np.array_equal(other.rows(0), plan.rows(0))
    # Random batches of the same pairs do repeat paragraphs: the check above can fail.
    plain = order.make_row_order(len(ids), BATCH, 0, 1.0, 0, seed=3)
    repeats = sum(len(np.unique(ids[plain.rows(s)])) < 2 * BATCH for s in range(plain.total_steps))
    assert repeats > plain.total_steps // 2


def test_settings_that_cannot_work_are_one_line():
    ids = np.array([[0, 1], [2, 1], [3, 1], [4, 5]])  # three rows share a text
    with pytest.raises(UserError, match=r"no batch of 3 rows without a repeated text"):
        order.make_row_order(4, 3, 0, 1.0, 0, 0, texts=ids)
    with pytest.raises(UserError, match=r"no_duplicates takes random batches"):
        order.make_row_order(4, 2, 0, 1.0, 50, 0, np.ones(4), texts=ids)
