"""Length buckets in fine-tuning and prediction: a batch padded only to the smallest length
bucket (config.pad_to_multiple_of times 1, 2, 3, 4, 6, 8, ...) that holds its longest row gives
the same predictions and metrics as batches padded to max_seq_length, compiles each length
once, and the logs count real tokens with the padding fraction beside them."""

import logging
import pathlib

import numpy as np
import pytest
import transformers
from flax import traverse_util
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util
from test_finetune_jobs import quick

from bert.finetuning import buckets, order, predict
from bert.jobs import glue as glue_job
from bert.jobs import ner as ner_job
from bert.tasks import glue
from bert.training import checkpoints, reporting
from configs import glue as glue_config
from configs import ner as ner_config

COMPILE_LOGGER = "jax._src.interpreters.pxla"  # JAX logs "Compiling jit(NAME) ..." at DEBUG
SEQ = 64


def row_order(train, num_rows: int, seed: int, lengths=None) -> order.RowOrder:
    """The job's row order for a config.train section."""
    return order.make_row_order(num_rows, train.batch_size, train.steps, train.epochs,
                                train.group_by_length, seed, lengths)  # fmt: skip


def compiled_lengths(caplog, name: str, thread: str = "") -> list[int]:
    """The sequence length of every compilation of jit(`name`) logged so far, in order (only
    those compiled in threads whose name starts with `thread`)."""
    lengths = []
    for record in caplog.records:
        if (
            record.msg.startswith("Compiling")
            and record.args[0] == f"jit({name})"
            and record.threadName.startswith(thread)
        ):
            shapes = {a.shape[1] for a in record.args[1] if a.ndim == 2 and a.dtype == np.int32}
            assert len(shapes) == 1, shapes  # inputs (and NER labels) of one length
            lengths.append(shapes.pop())
    return lengths


def scalars(workdir: pathlib.Path, tag: str) -> dict[int, float]:
    (events,) = workdir.glob("events.out.tfevents.*")
    accumulator = event_accumulator.EventAccumulator(str(events))
    accumulator.Reload()
    return {
        e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)
    }


def config_for(task: str, shared_data, init_from, pad: int):
    """A short run without dropout (dropout masks depend on the batch's shape)."""
    if task == "ner":
        config = quick(ner_config.get_config(), init_from, seq=SEQ, eval_limit=60)
        config.data_dir = str(shared_data / "conll2003")
        config.train.pack, config.train.group_by_length = False, 50  # buckets, not packed rows
    else:
        config = quick(glue_config.get_config(f"task={task}"), init_from, seq=SEQ)
        config.data_dir = str(shared_data / "glue" / glue.get_task(task).data_dir)
    config.model.hidden_dropout = config.model.attention_dropout = 0.0
    config.pad_to_multiple_of = pad
    return config


@pytest.mark.full
@pytest.mark.parametrize("task", ["sst2", "ner"])
def test_bucketed_finetuning_equals_fully_padded(
    task,
    shared_data,
    tiny_hf,
    tmp_path,
    caplog,
    monkeypatch,
):
    """The same 4 steps and predictions with every batch at length 64 and with buckets of 16:
    equal prediction files and metrics, outputs and parameters within 1e-6 (float rounding of
    different shapes only; 1.3e-7 measured), and one compilation per bucket, each compiled
    ahead in the background (bert/training/ahead.py), none on first use."""
    caplog.set_level(logging.DEBUG, logger=COMPILE_LOGGER)
    job = ner_job if task == "ner" else glue_job
    outputs = []  # (run, split inputs, model outputs) of every prediction

    def recording_predict(step, params, inputs, batch_size, mesh, multiple=0):
        got = original(step, params, inputs, batch_size, mesh, multiple)
        outputs.append((multiple, inputs, got))
        return got

    original = predict.predict
    monkeypatch.setattr(predict, "predict", recording_predict)
    runs = {}
    for pad in (0, 16):
        caplog.clear()
        workdir = tmp_path / str(pad)
        results = job.run(config_for(task, shared_data, tiny_hf, pad), str(workdir))
        params, _ = checkpoints.load_params(workdir, 4)
        compiled = {n: compiled_lengths(caplog, n) for n in ("train_step", "predict_step")}
        ahead = {n: compiled_lengths(caplog, n, "compile-ahead") for n in compiled}
        assert ahead == compiled, (pad, ahead, compiled)  # every shape compiled ahead
        runs[pad] = results, traverse_util.flatten_dict(params), compiled, workdir
    (padded, padded_params, padded_compiled, padded_dir) = runs[0]
    (bucketed, bucketed_params, bucketed_compiled, bucketed_dir) = runs[16]
    assert bucketed == padded
    # The model's outputs on every real position agree (per-token outputs are zero beyond a
    # batch's bucket, where no decoder looks).
    splits = len(outputs) // 2
    assert [m for m, _, _ in outputs] == [0] * splits + [16] * splits
    for (_, inputs, full), (_, _, cut) in zip(outputs[:splits], outputs[splits:], strict=True):
        assert full.shape == cut.shape
        real = inputs["input_mask"].astype(bool) if full.ndim == 3 else slice(None)
        np.testing.assert_allclose(cut[real], full[real], rtol=0, atol=1e-6)
    for name in sorted(p.name for p in (padded_dir / "predictions").iterdir()):
        assert (bucketed_dir / "predictions" / name).read_text() == (
            padded_dir / "predictions" / name
        ).read_text(), name
    for key, value in padded_params.items():
        np.testing.assert_allclose(bucketed_params[key], value, rtol=0, atol=1e-6)
    assert padded_compiled == {"train_step": [SEQ], "predict_step": [SEQ]}
    for name, lengths in bucketed_compiled.items():
        assert len(lengths) == len(set(lengths)), (name, lengths)  # each bucket compiled once
        assert all(n % 16 == 0 and n <= SEQ for n in lengths), (name, lengths)
        assert min(lengths) < SEQ, (name, lengths)  # buckets were used


@pytest.mark.full
def test_padding_fraction_counts_real_tokens(shared_data, tiny_hf, tmp_path):
    """train/padding_fraction of each report is that of the reported steps' rows, counted with
    HF's own tokenizer, at the full length and at buckets of 16."""
    data = shared_data / "glue" / "SST-2"
    examples = glue.read_split(glue.get_task("sst2"), data, "train")[:64]
    hf = transformers.BertTokenizerFast(str(tiny_hf / "vocab.txt"))
    tokens = np.array([len(hf(e.text_a, truncation=True, max_length=SEQ)["input_ids"])
                       for e in examples])  # fmt: skip
    for pad in (0, 16):
        config = config_for("sst2", shared_data, tiny_hf, pad)
        workdir = tmp_path / str(pad)
        glue_job.run(config, str(workdir))
        # rows of similar lengths go together (config.train.group_by_length), whatever the padding
        plan = row_order(config.train, len(examples), config.seed, tokens)
        reported = scalars(workdir, "train/padding_fraction")
        assert sorted(reported) == [2, 4]
        for step, fraction in reported.items():
            rows = [plan.rows(s) for s in (step - 2, step - 1)]
            real = sum(tokens[r].sum() for r in rows)
            positions = sum(len(r) * (-(-tokens[r].max() // 16) * 16 if pad else SEQ) for r in rows)
            assert fraction == pytest.approx(1 - real / positions, abs=1e-6), (pad, step)
        assert "train/tokens_per_second" in {t for t in scalars_tags(workdir)}


def scalars_tags(workdir: pathlib.Path) -> set[str]:
    (events,) = workdir.glob("events.out.tfevents.*")
    accumulator = event_accumulator.EventAccumulator(str(events))
    accumulator.Reload()
    return set(accumulator.Tags()["tensors"])


def test_progress_counts_real_tokens_per_second():
    progress = reporting.Progress(10, 0, sequences_per_step=4, seq_len=128)
    out = progress.throughput(2, real_tokens=300.0, padded_tokens=1000.0)
    assert out["padding_fraction"] == pytest.approx(0.7)
    assert out["tokens_per_second"] == pytest.approx(300.0 / (2 * out["step_time"]), rel=1e-6)
    assert "padding_fraction" not in progress.throughput(4)


def test_bucket_helpers():
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]])
    np.testing.assert_array_equal(buckets.used_lengths([mask]), [2, 4, 0, 3])
    np.testing.assert_array_equal(buckets.used_lengths([mask, mask[::-1]]), [3, 4, 4, 3])
    assert [buckets.bucket_length(n, 32, 128) for n in (0, 1, 32, 33, 127)] == [
        32,
        32,
        32,
        64,
        128,
    ]
    assert buckets.bucket_length(100, 48, 128) == 128 and buckets.bucket_length(5, 0, 64) == 64
    # beyond four multiples the buckets go 6, 8, 12, 16, 24, 32, ... multiples: at most half the
    # longest row is padding, and sequence 512 in multiples of 8 compiles 12 shapes, not 64
    lengths = list(range(1, 513))
    sizes = [buckets.bucket_length(n, 8, 512) for n in lengths]
    assert sorted(set(sizes)) == [8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    assert all(n <= b and (b <= 32 or b <= 1.5 * n) for n, b in zip(lengths, sizes, strict=True))
    assert [buckets.bucket_length(n, 8, 100) for n in (33, 49, 65, 97)] == [48, 64, 96, 100]
    # several texts: each text's arrays to its own length, per-token arrays of none to the longest
    texts = {k: np.zeros((3, 8)) for k in ("a_input_ids", "a_input_mask", "b_input_ids", "tags")}
    texts["label"] = np.zeros(3)
    cut = buckets.cut_texts(texts, {"a_input_mask": 2, "b_input_mask": 6}, 8)
    widths = {k: v.shape[1:] for k, v in cut.items()}
    assert widths == {"a_input_ids": (2,), "a_input_mask": (2,), "b_input_ids": (6,),
                      "tags": (6,), "label": ()}  # fmt: skip
    # a question beside a paragraph: own lengths; texts of similar lengths: each row's longest
    short, long = np.array([[1, 1, 0, 0, 0, 0]] * 2), np.array([[1] * 5 + [0], [1] * 6])
    apart = buckets.lengths_by_text({"a_input_mask": short, "b_input_mask": long}, 1, 1.5)
    assert {k: v.tolist() for k, v in apart.items()} == {"a_input_mask": [2, 2],
                                                        "b_input_mask": [5, 6]}  # fmt: skip
    alike = buckets.lengths_by_text({"a_input_mask": long[::-1], "b_input_mask": long}, 1, 1.5)
    assert {k: v.tolist() for k, v in alike.items()} == dict.fromkeys(alike, [6, 6])
    arrays = {"input_ids": np.zeros((3, 8)), "label": np.zeros(3), "offsets": np.zeros((3, 8, 2))}
    cut = buckets.cut_length(arrays, 4, 8)
    assert {k: v.shape for k, v in cut.items()} == {
        "input_ids": (3, 4),
        "label": (3,),
        "offsets": (3, 4, 2),
    }


def test_group_by_length_keeps_a_seeded_permutation_with_little_padding(shared_data):
    """Grouped batches: every epoch still takes each row at most once (all but the dropped
    remainder), the order is a function of (seed, epoch), the batches' length buckets shrink to
    well under those of plain random batches on SST-2's real lengths, and the long batches are
    spread over the epoch rather than coming first."""
    examples = glue.read_split(glue.get_task("sst2"), shared_data / "glue" / "SST-2", "train")
    lengths = np.array([min(len(e.text_a.split()) + 2, 128) for e in examples[:20000]])
    config = glue_config.get_config("task=sst2")
    plain = row_order(config.train, len(lengths), 3)
    grouped = row_order(config.train, len(lengths), 3, lengths)
    again = row_order(config.train, len(lengths), 3, lengths)
    for epoch in (0, 1):
        epoch_rows = grouped.epoch_batches(epoch)
        assert epoch_rows.shape == (len(lengths) // 32, 32)
        assert len(np.unique(epoch_rows)) == epoch_rows.size
        np.testing.assert_array_equal(epoch_rows, again.epoch_batches(epoch))
    assert not np.array_equal(grouped.epoch_batches(0), grouped.epoch_batches(1))
    np.testing.assert_array_equal(
        grouped.rows(grouped.steps_per_epoch + 5), grouped.epoch_batches(1)[5]
    )

    def mean_bucket(order) -> float:
        longest = lengths[order.epoch_batches(0)].max(axis=1)
        return float(np.mean([buckets.bucket_length(n, 16, 128) for n in longest]))

    assert mean_bucket(grouped) < 0.6 * mean_bucket(plain), (
        mean_bucket(grouped),
        mean_bucket(plain),
    )
    longest = lengths[grouped.epoch_batches(0)].max(axis=1)
    descending = np.mean(longest[:-1] >= longest[1:])  # about 0.98 if the sorted runs stayed
    assert descending < 0.75, descending
