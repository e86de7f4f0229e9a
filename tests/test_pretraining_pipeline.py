"""The pre-training pipeline: BERT's NSP and packed layouts on real Wikipedia records, pairs and
packing checked token by token on tagged synthetic documents, determinism, exact resume, and
disjoint hosts."""

import dataclasses
import itertools
import pathlib

import numpy as np
import pipeline_data
import pytest
import tensorflow as tf
from pipeline_data import CLS, MASK, PAD, SEP, UNK

from input_pipeline import batches, instance_stream, instances, pretraining
from input_pipeline.tokenizers import SpecialIds
from util.errors import UserError

SETTINGS = {f.name for f in dataclasses.fields(batches.Settings)}


@pytest.fixture(scope="module")
def wiki(shared_data, tmp_path_factory):
    files, tokenizer = pipeline_data.write_wikipedia(
        shared_data, tmp_path_factory.mktemp("wiki"), num_files=2
    )
    ids = dict(
        vocab_size=tokenizer.vocab_size,
        pad_id=tokenizer.pad_id,
        unk_id=tokenizer.unk_id,
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
        mask_id=tokenizer.mask_id,
    )
    return files, ids


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return pipeline_data.write_synthetic(tmp_path_factory.mktemp("synthetic"), 4, 12)


SYNTHETIC_IDS = dict(pad_id=PAD, unk_id=UNK, cls_id=CLS, sep_id=SEP, mask_id=MASK)


def _take(dataset: tf.data.Dataset, count: int) -> list[dict[str, np.ndarray]]:
    return list(dataset.take(count).as_numpy_iterator())


def _stack(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _arguments(ids: dict, kwargs: dict) -> tuple[batches.Settings, SpecialIds, dict]:
    """(the batch settings, the special ids, the other keyword arguments) of flat arguments."""
    settings = {k: v for k, v in kwargs.items() if k in SETTINGS}
    settings.setdefault("max_predictions_per_seq", 20)
    special = SpecialIds(**{k.removesuffix("_id"): v for k, v in ids.items()})
    rest = {k: v for k, v in kwargs.items() if k not in SETTINGS}
    return batches.Settings(**settings), special, rest


def _masked(files, ids, **kwargs) -> tf.data.Dataset:
    """make_pretraining_dataset of `ids` (pad_id=..., vocab_size=...) and flat arguments."""
    settings, special, rest = _arguments(ids, kwargs)
    return pretraining.make_pretraining_dataset(files, settings, special, **rest)


def _unmasked(files, ids, **kwargs) -> tf.data.Dataset:
    """The instance stream that `_masked(files, ids, **kwargs)` masks."""
    settings, special, rest = _arguments(ids, kwargs)
    return instance_stream.make_instance_dataset(files, settings, special, **rest)


def _check_masked_against_unmasked(masked, unmasked, ids):
    assert list(masked) == list(pretraining.BATCH_KEYS)
    for key in ("input_ids", "segment_ids", "input_mask", "masked_lm_positions", "masked_lm_ids"):
        assert masked[key].dtype == np.int32, key
    assert masked["masked_lm_weights"].dtype == np.float32
    assert masked["next_sentence_labels"].dtype == np.int32
    originals = pipeline_data.unmasked(masked)  # masked_lm_ids are the original tokens
    assert np.array_equal(originals, unmasked["input_ids"])
    for key in ("segment_ids", "input_mask", "next_sentence_labels"):
        assert np.array_equal(masked[key], unmasked[key]), key
    special = np.isin(unmasked["input_ids"], list(ids.values())[1:])
    rate = masked["masked_lm_weights"].sum() / (~special).sum()
    assert abs(rate - 0.15) < 0.005


def _check_layout(batch, ids, pairs: bool):
    """[CLS] A [SEP] (B [SEP]) padding, with segment ids and input mask to match."""
    tokens, segments, mask = batch["input_ids"], batch["segment_ids"], batch["input_mask"]
    length = tokens.shape[1]
    for row in range(len(tokens)):
        seps = np.flatnonzero(tokens[row] == ids["sep_id"])
        assert np.flatnonzero(tokens[row] == ids["cls_id"]).tolist() == [0]
        assert len(seps) == (2 if pairs else 1)
        end = seps[-1] + 1
        assert seps[0] >= 2 and (not pairs or seps[1] >= seps[0] + 2)  # A and B not empty
        assert np.array_equal(mask[row], np.arange(length) < end)
        assert np.all(tokens[row, end:] == ids["pad_id"]) and ids["pad_id"] not in tokens[row, :end]
        expected = (np.arange(length) > seps[0]) & (np.arange(length) < end) if pairs else 0
        assert np.array_equal(segments[row], np.broadcast_to(expected, (length,)))


def test_nsp_batches_on_wikipedia(wiki):
    files, ids = wiki
    kwargs = dict(batch_size=256, seq_length=128, max_predictions_per_seq=20, seed=1)
    masked = _stack(_take(_masked(files, ids, **kwargs), 16))
    unmasked = _stack(_take(_unmasked(files, ids, **kwargs), 16))
    _check_masked_against_unmasked(masked, unmasked, ids)
    _check_layout(unmasked, ids, pairs=True)
    assert abs(masked["next_sentence_labels"].mean() - 0.5) < 0.02
    lengths = masked["input_mask"].sum(axis=1)
    assert 0.02 < (lengths < 64).mean() < 0.25  # short_seq_prob = 0.1 gives some short pairs
    assert np.median(lengths) >= 120


def test_packed_batches_on_wikipedia(wiki):
    files, ids = wiki
    kwargs = dict(batch_size=128, seq_length=128, max_predictions_per_seq=20, mode="packed")
    masked = _stack(_take(_masked(files, ids, **kwargs), 8))
    unmasked = _stack(_take(_unmasked(files, ids, **kwargs), 8))
    _check_masked_against_unmasked(masked, unmasked, ids)
    _check_layout(unmasked, ids, pairs=False)
    assert np.all(masked["next_sentence_labels"] == 0)
    # Whole ~25-token sentences into 126 slots leave about half a sentence free (86% here).
    assert masked["input_mask"].mean() > 0.8


def _segments(row: np.ndarray) -> list[np.ndarray]:
    """The text segments of one row (the tokens between special tokens)."""
    seps = np.flatnonzero(row == SEP)
    return [row[1 : seps[0]]] + [row[a + 1 : b] for a, b in itertools.pairwise(seps)]


def test_nsp_pairs_follow_bert_rules(synthetic):
    """A and B are runs of one document each; B follows A in it (label 0) or is elsewhere (1)."""
    kwargs = dict(batch_size=64, seq_length=64, mode="nsp", block_documents=8, seed=3)
    ids = SYNTHETIC_IDS | {"vocab_size": synthetic.vocab_size}
    batch = _stack(_take(_unmasked(synthetic.files, ids, **kwargs), 12))
    untruncated = 0
    for row, label in zip(batch["input_ids"], batch["next_sentence_labels"], strict=True):
        a, b = _segments(row)
        assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) <= 61
        assert np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)  # contiguous in a document
        doc_a, doc_b = pipeline_data.document_of(a[0]), pipeline_data.document_of(b[0])
        if label == 0:
            assert doc_a == doc_b and b[0] > a[-1]
            if len(a) + len(b) < 61:  # nothing was cut, so B starts right after A
                assert b[0] == a[-1] + 1
                untruncated += 1
        else:
            assert doc_a != doc_b
    assert untruncated > 20
    assert abs(batch["next_sentence_labels"].mean() - 0.5) < 0.05


def test_truncation_lengths_match_berts_token_by_token_loop():
    for max_num_tokens in (2, 3, 8, 25):
        for len_a in range(1, 40):
            for len_b in range(1, 40):
                a, b = len_a, len_b
                while a + b > max_num_tokens:  # BERT: trim the longer side, B on a tie
                    a, b = (a - 1, b) if a > b else (a, b - 1)
                assert instances._truncated_lengths(len_a, len_b, max_num_tokens) == (a, b)


def test_packing_keeps_every_token_once_and_sentences_whole(synthetic):
    kwargs = dict(batch_size=16, seq_length=64, mode="packed", block_documents=5)
    epoch0 = []
    ids = SYNTHETIC_IDS | {"vocab_size": synthetic.vocab_size}
    for batch in _unmasked(synthetic.files, ids, **kwargs).as_numpy_iterator():
        in_epoch0 = batch["example_keys"][:, 1] == 0
        epoch0 += [_segments(row)[0] for row in batch["input_ids"][in_epoch0]]
        if not in_epoch0.all():
            break
    tokens = np.concatenate(epoch0)
    assert np.array_equal(np.sort(tokens), np.sort(synthetic.tokens()))  # each exactly once
    starts, long_tokens = set(), set()
    following = {}  # last token of a sentence -> length of the next sentence of its document
    for sentences in synthetic.documents.values():
        for sentence, after in itertools.zip_longest(sentences, sentences[1:]):
            starts.add(sentence[0])
            following[sentence[-1]] = len(after) if after else 0
            if len(sentence) > 62:
                long_tokens.update(sentence)
    for segment in epoch0:
        assert len(segment) <= 62
        assert segment[0] in starts or segment[0] in long_tokens  # cut only inside long ones
        assert segment[-1] in following or segment[-1] in long_tokens
        # Greedy: the document's next sentence, next in the stream too, did not fit.
        if following.get(segment[-1], 0):
            assert len(segment) + following[segment[-1]] > 62


def test_same_seed_same_batches_other_seed_other_batches(synthetic):
    kwargs = dict(batch_size=32, seq_length=64, max_predictions_per_seq=10, block_documents=6)
    ids = SYNTHETIC_IDS | {"vocab_size": synthetic.vocab_size}
    first = _take(_masked(synthetic.files, ids, **kwargs), 6)
    again = _take(_masked(synthetic.files, ids, **kwargs), 6)
    other = _take(_masked(synthetic.files, ids, seed=1, **kwargs), 6)
    for a, b, c in zip(first, again, other, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert not np.array_equal(a["input_ids"], c["input_ids"])


def test_epochs_draw_new_masks(tmp_path):
    """One file, so every epoch packs the same instances; their masks must differ."""
    data = pipeline_data.write_synthetic(tmp_path, 1, 10)
    kwargs = dict(batch_size=20, seq_length=64, max_predictions_per_seq=10, mode="packed")
    dataset = _masked(data.files, SYNTHETIC_IDS | {"vocab_size": data.vocab_size}, **kwargs)
    seen: dict[bytes, list[np.ndarray]] = {}
    for batch in _take(dataset, 12):
        rows = pipeline_data.unmasked(batch)
        for row, positions in zip(rows, batch["masked_lm_positions"], strict=True):
            seen.setdefault(row.tobytes(), []).append(positions)
    repeated = [masks for masks in seen.values() if len(masks) >= 2]
    assert len(repeated) >= 20
    assert np.mean([not np.array_equal(m[0], m[1]) for m in repeated]) > 0.9


@pytest.mark.parametrize(
    "mode, whole_word_masking",
    [pytest.param("nsp", False, marks=pytest.mark.full), ("packed", True)],
)
def test_resume_gives_the_uninterrupted_batches(wiki, mode, whole_word_masking):
    files, ids = wiki
    kwargs = dict(
        batch_size=16,
        seq_length=128,
        max_predictions_per_seq=20,
        mode=mode,
        whole_word_masking=whole_word_masking,
        block_documents=8,
        seed=11,
    )
    # The first step holding an instance of epoch 1: resuming after it skips a whole epoch.
    unmasked = _unmasked(files, ids, **kwargs).as_numpy_iterator()
    epoch1 = next(i for i, b in enumerate(unmasked) if b["example_keys"][:, 1].max() >= 1)
    uninterrupted = _take(_masked(files, ids, **kwargs), epoch1 + 8)
    for start in (5, epoch1 - 1, epoch1 + 2):  # in the first block, across, after the epoch
        resumed = _take(_masked(files, ids, start_step=start, **kwargs), 6)
        for a, b in zip(uninterrupted[start : start + 6], resumed, strict=True):
            assert all(np.array_equal(a[k], b[k]) for k in pretraining.BATCH_KEYS)


@pytest.mark.parametrize("num_files", [4, 1])  # by file, and by record within one file
def test_hosts_see_disjoint_documents(tmp_path, num_files):
    data = pipeline_data.write_synthetic(tmp_path, num_files, 48 // num_files)
    seen = []
    for host in (0, 1):
        dataset = _unmasked(
            data.files,
            SYNTHETIC_IDS | {"vocab_size": data.vocab_size},
            batch_size=32,
            seq_length=64,
            mode="packed",
            process_index=host,
            process_count=2,
        )
        tokens = _stack(_take(dataset, 10))["input_ids"]
        assert _stack(_take(dataset, 10))["example_keys"][:, 1].max() >= 1  # whole epochs seen
        seen.append(set(pipeline_data.document_of(tokens[tokens >= pipeline_data.BASE]).tolist()))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(data.documents)
    assert min(len(s) for s in seen) >= 20


def test_errors_name_the_problem(synthetic, tmp_path):
    kwargs = dict(batch_size=4, seq_length=64, max_predictions_per_seq=5)
    ids = SYNTHETIC_IDS | {"vocab_size": synthetic.vocab_size}
    with pytest.raises(UserError, match="no record file"):
        _masked(str(tmp_path / "missing-*.tfrecord"), SYNTHETIC_IDS | {"vocab_size": 100},
                **kwargs)  # fmt: skip
    with pytest.raises(ValueError, match="mode"):
        _masked(synthetic.files, ids, mode="mlm", **kwargs)
    with pytest.raises(ValueError, match="process_index"):
        _masked(synthetic.files, ids, process_index=2, **kwargs)
    small_vocabulary = _masked(synthetic.files, SYNTHETIC_IDS | {"vocab_size": 1000}, **kwargs)
    with pytest.raises(tf.errors.OpError, match="another vocabulary"):
        next(iter(small_vocabulary))
    # The jobs' reader passes on a UserError raised inside the pipeline as itself, one line.
    keys = pretraining.BATCH_KEYS
    with pytest.raises(UserError, match="another vocabulary") as raised:
        next(pretraining.numpy_batches(small_vocabulary, keys, synthetic.files))
    assert "Traceback" not in str(raised.value) and "{{" not in str(raised.value)


def test_a_record_damaged_after_the_start_check_names_its_shard(synthetic, tmp_path):
    """A shard changed in place (same size) fails its record checksum while read: one line
    naming it, not a DataLossError traceback."""
    files = [pathlib.Path(tmp_path / pathlib.Path(f).name) for f in synthetic.files]
    for source, copy in zip(synthetic.files, files, strict=True):
        copy.write_bytes(pathlib.Path(source).read_bytes())
    data = bytearray(files[1].read_bytes())
    data[len(data) // 2] ^= 0x10
    files[1].write_bytes(bytes(data))
    ids = SYNTHETIC_IDS | {"vocab_size": synthetic.vocab_size}
    dataset = _masked([str(f) for f in files], ids, batch_size=4, seq_length=64,
                      max_predictions_per_seq=5)  # fmt: skip
    with pytest.raises(UserError) as raised:
        for _ in pretraining.numpy_batches(dataset, pretraining.BATCH_KEYS, files):
            pass  # an endless stream: the damaged record is met in the first epoch
    message = str(raised.value)
    assert message.startswith(f"damaged prepared shard: {files[1]} (corrupted record at")
    assert str(files[0]) not in message and "config.data.verify=checksum" in message
