"""On-the-fly masking: BERT's selection rule and 80/10/10 statistics on real Wikipedia tokens,
whole words kept whole, Google's greedy word budget, and a stateless, per-example random stream."""

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import corpora, masking, tokenizers

LENGTH, PREDICTIONS = 128, 20


@pytest.fixture(scope="module")
def wiki(shared_data):
    """Rows `[CLS] a [SEP] b [SEP] pad` of real tokens: ids, word starts, the tokenizer."""
    tokenizer = tokenizers.load_tokenizer(shared_data / "vocab" / "bert-base-uncased-vocab.txt")
    ids, starts = [], []
    for document in corpora.read_wikiextractor(shared_data / "wikipedia" / "AA" / "wiki_00"):
        for encoding in tokenizer.encode_batch(document):
            ids += encoding.ids
            starts += encoding.word_starts
    rng = np.random.default_rng(0)
    rows = np.full((1100, LENGTH), tokenizer.pad_id, np.int32)  # [N, L]
    row_starts = np.ones((1100, LENGTH), np.int32)
    cursor = 0
    for row in range(len(rows)):
        used = LENGTH if rng.random() < 0.85 else int(rng.integers(4, LENGTH))
        split = int(rng.integers(1, used - 2))
        rows[row, :used] = ids[cursor : cursor + used]
        row_starts[row, :used] = starts[cursor : cursor + used]
        rows[row, [0, split, used - 1]] = tokenizer.cls_id, tokenizer.sep_id, tokenizer.sep_id
        cursor += used
    rows[-3:, :5] = tokenizer.cls_id, tokenizer.sep_id, tokenizer.sep_id, 0, 0  # no candidate
    return rows, row_starts, tokenizer


def _mask(rows, keys, tokenizer, **kwargs):
    out = masking.mask_tokens(
        rows,
        keys,
        seed=kwargs.pop("seed", 7),
        max_predictions_per_seq=kwargs.pop("max_predictions_per_seq", PREDICTIONS),
        special_ids=sorted(tokenizer.special_ids.all),
        mask_id=tokenizer.mask_id,
        vocab_size=tokenizer.vocab_size,
        **kwargs,
    )
    return {k: v.numpy() for k, v in out.items()}


def _keys(n, epoch=0):
    return np.stack([np.zeros(n), np.full(n, epoch), np.arange(n)], axis=1).astype(np.int64)


def _chosen(out, shape):
    """bool [N, L]: the positions reported as predictions; checks their layout on the way."""
    positions, weights = out["masked_lm_positions"], out["masked_lm_weights"]
    count = weights.sum(axis=1).astype(int)
    assert np.all(weights == (np.arange(weights.shape[1]) < count[:, None]))  # 1s, then 0s
    assert np.all(positions[weights == 0] == 0) and np.all(out["masked_lm_ids"][weights == 0] == 0)
    chosen = np.zeros(shape, bool)
    for row, (pos, n) in enumerate(zip(positions, count, strict=True)):
        assert np.all(np.diff(pos[:n]) > 0)  # ascending, no repeats
        chosen[row, pos[:n]] = True
    return chosen


def _check_common(rows, out, chosen, tokenizer):
    special = np.isin(rows, sorted(tokenizer.special_ids.all))
    assert not np.any(chosen & special)  # never a special token, never padding
    assert np.array_equal(out["input_ids"][~chosen], rows[~chosen])
    lm_ids = out["masked_lm_ids"]
    weights = out["masked_lm_weights"] > 0
    originals = np.take_along_axis(rows, out["masked_lm_positions"], axis=1)
    assert np.array_equal(lm_ids[weights], originals[weights])
    return special


def test_selection_and_replacement_statistics(wiki):
    rows, _, tokenizer = wiki
    out = _mask(rows, _keys(len(rows)), tokenizer)
    chosen = _chosen(out, rows.shape)
    special = _check_common(rows, out, chosen, tokenizer)

    candidates = (~special).sum(axis=1)
    assert candidates.sum() >= 100_000
    wanted = [min(PREDICTIONS, max(1, round(n * 0.15))) if n else 0 for n in candidates]
    assert np.array_equal(chosen.sum(axis=1), wanted)  # BERT's count, exactly, per row
    assert abs(chosen.sum() / candidates.sum() - 0.15) < 0.005

    new, old = out["input_ids"][chosen], rows[chosen]
    masked = new == tokenizer.mask_id
    kept = new == old
    replaced = ~masked & ~kept
    assert abs(masked.mean() - 0.8) < 0.015
    assert abs(replaced.mean() - 0.1) < 0.015
    assert abs(kept.mean() - 0.1) < 0.015
    assert not np.any(np.isin(new[replaced], sorted(tokenizer.special_ids.all)))
    assert len(np.unique(new[replaced])) > 0.9 * replaced.sum()  # spread over the vocabulary


def _words(rows, starts, special):
    """Word ids per token (-1 on special tokens): a start flag or a special before starts one."""
    candidate = ~special
    previous = np.pad(candidate[:, :-1], [(0, 0), (1, 0)])
    is_start = candidate & ((starts > 0) | ~previous)
    words = np.cumsum(is_start, axis=1) - 1
    return np.where(candidate, words, -1)


def test_whole_word_masking_keeps_words_whole(wiki):
    rows, starts, tokenizer = wiki
    out = _mask(rows, _keys(len(rows)), tokenizer, whole_word_masking=True, word_starts=starts)
    chosen = _chosen(out, rows.shape)
    special = _check_common(rows, out, chosen, tokenizer)
    words = _words(rows, starts, special)
    multi_token_words = 0
    for row in range(len(rows)):
        for word in range(words[row].max() + 1):
            tokens = chosen[row, words[row] == word]
            assert tokens.all() or not tokens.any(), (row, word)
            multi_token_words += len(tokens) > 1 and tokens.all()
    assert multi_token_words > 500  # words of several pieces were chosen (whole)
    candidates = (~special).sum(axis=1)
    budget = np.array([min(PREDICTIONS, max(1, round(n * 0.15))) if n else 0 for n in candidates])
    assert np.all(chosen.sum(axis=1) <= budget)
    assert abs(chosen.sum() / candidates.sum() - 0.15) < 0.005
    assert abs((out["input_ids"][chosen] == tokenizer.mask_id).mean() - 0.8) < 0.015


def test_word_budget_is_googles_greedy_rule():
    """Words visited in order are taken whenever they fit in what is left of the budget."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 6, size=(300, 40)).astype(np.int32)
    lengths[:, 30:] = 0  # absent words
    budgets = rng.integers(0, 25, size=300).astype(np.int32)
    taken = masking._take_words(tf.constant(lengths), tf.constant(budgets), 26).numpy()
    for row in range(300):
        left, expected = budgets[row], []
        for length in lengths[row]:
            fits = 0 < length <= left
            expected.append(fits)
            left -= length if fits else 0
        assert taken[row].tolist() == expected, row


def test_stateless_keys_and_batch_independence(wiki):
    rows, _, tokenizer = wiki
    rows = rows[:64]
    first = _mask(rows, _keys(64), tokenizer)
    again = _mask(rows, _keys(64), tokenizer)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    next_epoch = _mask(rows, _keys(64, epoch=1), tokenizer)
    other_seed = _mask(rows, _keys(64), tokenizer, seed=8)
    for other in (next_epoch, other_seed):
        differs = (other["masked_lm_positions"] != first["masked_lm_positions"]).any(axis=1)
        assert differs[:-3].mean() > 0.95
    # One example at a time, inside a tf.data map, gives the rows of the batch.
    dataset = tf.data.Dataset.from_tensor_slices((rows, _keys(64))).map(
        lambda ids, key: masking.mask_tokens(
            ids,
            key,
            seed=7,
            max_predictions_per_seq=PREDICTIONS,
            special_ids=sorted(tokenizer.special_ids.all),
            mask_id=tokenizer.mask_id,
            vocab_size=tokenizer.vocab_size,
        )
    )
    for row, single in enumerate(dataset.as_numpy_iterator()):
        assert all(np.array_equal(single[k], first[k][row]) for k in first)


def test_replacements_avoid_special_ids_and_edge_rows():
    specials = [0, 1, 2, 3, 4, 7]  # one special inside the range of ordinary ids
    rng = np.random.default_rng(2)
    rows = rng.choice([5, 6, 8, 9, 10, 11], size=(4000, 16)).astype(np.int32)
    rows[:, 0], rows[:, -1] = 2, 3
    rows[0, 4:], rows[0, 3] = 0, 3  # 2 candidates: one prediction
    rows[1, 1:] = 0  # no candidate at all
    out = masking.mask_tokens(
        rows,
        _keys(4000),
        seed=3,
        max_predictions_per_seq=40,  # more than the length: padded
        special_ids=specials,
        mask_id=4,
        vocab_size=12,
        mask_rate=0.5,
    )
    out = {k: v.numpy() for k, v in out.items()}
    assert out["masked_lm_positions"].shape == (4000, 40)
    count = out["masked_lm_weights"].sum(axis=1)
    assert count[0] == 1 and count[1] == 0 and np.all(count[2:] == 7)  # round(14 * 0.5)
    chosen = _chosen(out, rows.shape)
    new = out["input_ids"][chosen]
    replaced = new[(new != 4) & (new != rows[chosen])]
    values, counts = np.unique(replaced, return_counts=True)
    assert set(values) <= {5, 6, 8, 9, 10, 11}
    assert counts.min() > 0.8 * counts.mean()  # uniform over the allowed ids


def test_bad_arguments():
    ids, keys = np.full((1, 8), 5, np.int32), _keys(1)
    common = dict(seed=0, max_predictions_per_seq=2, special_ids=[0, 4], mask_id=4, vocab_size=9)
    with pytest.raises(ValueError, match="word_starts"):
        masking.mask_tokens(ids, keys, whole_word_masking=True, **common)
    with pytest.raises(ValueError, match="mask_rate"):
        masking.mask_tokens(ids, keys, mask_rate=0.0, **common)
    with pytest.raises(ValueError, match="mask_id"):
        masking.mask_tokens(ids, keys, **(common | {"special_ids": [0]}))
