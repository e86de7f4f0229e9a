"""Pre-training a modern encoder from scratch (configs/modernbert.py): every size is a valid
encoder of ModernBERT's shapes as transformers counts them, the warmup-stable-decay schedule's
values, packed rows whose documents attend only to themselves (checked on real Wikipedia
batches, token by token and through the model), and, in the full tier, a tiny run through
main.py that learns, resumes bitwise and exports as a ModernBertForMaskedLM with our logits."""

import dataclasses
import json
import math
import shutil
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pipeline_data
import pytest
import torch
import transformers

from bert import pretrained
from bert.jobs import pretrain
from bert.jobs.settings import model_config
from bert.model import BertModel
from bert.objectives import mlm
from bert.training import checkpoints, optim
from configs import modernbert
from input_pipeline import batches, instance_stream, pretraining, records
from input_pipeline.tokenizers import SpecialIds
from tests.test_pretrain_job import ROOT, run_job, scalars
from util.errors import UserError

# ModernBERT's released shapes (answerdotai/ModernBERT-base and -large config.json); base's are
# transformers' ModernBertConfig defaults.
RELEASED = {"base": {}, "large": dict(hidden_size=1024, num_hidden_layers=28,
                                      num_attention_heads=16, intermediate_size=2624)}  # fmt: skip
SEQ = 128  # the short recipe's rows
ROWS = 1024  # rows of real Wikipedia checked


@pytest.mark.parametrize("size", list(modernbert.SIZES))
def test_each_size_is_a_modern_encoder_with_transformers_parameter_count(size):
    """Both recipes build configs the job accepts; the encoder has ModernBERT's options, and
    ours has transformers' ModernBertForMaskedLM's parameters (plus our pooler, which it
    lacks); base and large have the released shapes."""
    config = modernbert.get_config(f"size={size},vocab_size=50368")
    ours = model_config(config.model, 50368)
    hf = transformers.ModernBertConfig(
        vocab_size=50368, hidden_size=ours.hidden_size, num_hidden_layers=ours.num_layers,
        num_attention_heads=ours.num_heads, intermediate_size=ours.intermediate_size,
    )  # fmt: skip
    for field, want in RELEASED.get(size, {}).items():
        assert getattr(hf, field) == want, field
    if size == "base":  # the defaults are base's
        assert hf.to_dict() == transformers.ModernBertConfig(vocab_size=50368).to_dict()
    assert (ours.num_heads * 64, ours.position_embedding, ours.type_vocab_size) == (
        ours.hidden_size, "rope", 0)  # fmt: skip
    assert (ours.rope_theta, ours.local_rope_theta, ours.layer_norm_eps) == (
        hf.global_rope_theta, hf.local_rope_theta, hf.norm_eps)  # fmt: skip
    assert (ours.local_window, ours.global_every) == (hf.local_attention,
                                                      hf.global_attn_every_n_layers)  # fmt: skip
    assert ours.pre_norm and ours.embedding_norm and ours.gated_mlp and ours.decoder_bias
    assert not (ours.norm_bias or ours.attention_bias or ours.mlp_bias or ours.head_bias)
    assert ours.prediction_head and ours.classifier_pooling == "mean"  # the released heads
    model = mlm.Mlm.create(ours, documents=True).model
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 8), jnp.int32))
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(shapes)))
    with torch.device("meta"):
        theirs = sum(p.numel() for p in transformers.ModernBertForMaskedLM(hf).parameters())
    assert count == theirs + ours.hidden_size * (ours.hidden_size + 1)  # the pooler
    if size == "base":  # the paper's 149M
        assert abs(theirs - 149e6) < 1e6
    for recipe in ("paper", "short"):
        config = modernbert.get_config(f"size={size},recipe={recipe}")
        t, d = config.train, config.data
        assert (config.objective, d.mask_rate, d.pack_attention) == ("mlm", 0.3, "document")
        assert (t.optimizer, t.b1, t.b2, t.eps, t.schedule) == ("adamw", 0.9, 0.98, 1e-6, "wsd")
        assert t.weight_decay * t.learning_rate == pytest.approx(1e-5)  # ModernBERT's, per step
        assert config.max_seq_length <= config.model.max_position_embeddings
        assert d.max_predictions_per_seq == round(config.max_seq_length * 0.3)
        optim.learning_rate_schedule(
            t.learning_rate, pretrain.warmup_steps(t), t.steps, t.end_learning_rate,
            t.decay_power, t.schedule, t.decay_proportion, t.decay_shape,
        )  # fmt: skip


def test_config_arg_and_pack_attention_errors_name_the_field():
    with pytest.raises(UserError, match="unknown model size 'medium'"):
        modernbert.get_config("size=medium")
    with pytest.raises(UserError, match="unknown config arg 'phase'"):
        modernbert.get_config("phase=2")
    config = modernbert.get_config("size=tiny")
    config.data.pack_attention = "sentence"
    with pytest.raises(UserError, match=r"^config.data.pack_attention='sentence' is not one of"):
        pretrain.documents_apart(config)
    config.data.pack_attention, config.objective = "document", "mlm_nsp"
    with pytest.raises(UserError, match=r"^config.data.pack_attention='document' applies to pa"):
        pretrain.documents_apart(config)


def _learning_rates(steps, **kwargs) -> list[float]:
    schedule = optim.learning_rate_schedule(**kwargs)
    return [float(schedule(step)) for step in steps]


def test_pre_training_continues_from_a_padded_vocabulary(tmp_path):
    """ModernBERT pads its embedding table past its tokenizer (50,368 rows for 50,280 pieces):
    config.model.vocab_size may exceed the tokenizer's vocabulary, never fall short of it, and
    init_from refuses, naming the value to set, a checkpoint whose table has another size."""
    hf = transformers.ModernBertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=48,
                                       local_attention=8, pad_token_id=0, bos_token_id=1,
                                       eos_token_id=2, cls_token_id=1, sep_token_id=2)  # fmt: skip
    transformers.ModernBertForMaskedLM(hf).save_pretrained(tmp_path / "modern")
    fields = modernbert.get_config("size=tiny").model
    fields.vocab_size = 96
    assert model_config(fields, 90).vocab_size == 96  # 90 pieces, 96 rows
    fields.vocab_size = 89
    with pytest.raises(UserError, match=r"vocab_size=89 but the tokenizer has 90 tokens"):
        model_config(fields, 90)

    loaded = pretrained.load(str(tmp_path / "modern"), with_tokenizer=False)
    assert loaded.config.vocab_size == 96
    short = dataclasses.replace(loaded.config, vocab_size=90)
    with pytest.raises(UserError, match=r"embeds 96 token ids, the model here 90: set "
                                        r"--config.model.vocab_size=96$"):  # fmt: skip
        pretrain.initial_params(str(tmp_path / "modern"), short)
    params = pretrain.initial_params(str(tmp_path / "modern"), loaded.config)
    assert params["bert"]["embeddings"]["word_embeddings"].shape == (96, 32)


def test_warmup_stable_decay_schedule_values():
    """Warm-up 0 -> peak over 10 steps, the peak until step 70, then the last 30 of 100 steps
    decay to `end`: 1-sqrt (a third of the decay gone: peak - (peak - end) / sqrt(3)) or
    linear. The linear schedule is BERT's as before."""
    peak, end = 1e-3, 1e-4
    common = dict(peak=peak, warmup_steps=10, total_steps=100, end=end, kind="wsd",
                  decay_proportion=0.3)  # fmt: skip
    steps = [0, 5, 10, 40, 70, 80, 85, 100, 120]
    sqrt = _learning_rates(steps, **common, decay_shape="1-sqrt")
    want = [0, peak / 2, peak, peak, peak, peak - (peak - end) * math.sqrt(1 / 3),
            peak - (peak - end) * math.sqrt(0.5), end, end]  # fmt: skip
    np.testing.assert_allclose(sqrt, want, rtol=1e-6, atol=1e-12)
    linear = _learning_rates(steps, **common, decay_shape="linear")
    np.testing.assert_allclose(linear[5:7], [peak - (peak - end) / 3, (peak + end) / 2], rtol=1e-6)
    no_warmup = _learning_rates([0, 69, 70, 99], **{**common, "warmup_steps": 0})
    np.testing.assert_allclose(no_warmup[:3], [peak] * 3, rtol=1e-6)
    bert = _learning_rates([0, 5, 10, 55, 100], peak=peak, warmup_steps=10, total_steps=100)
    np.testing.assert_allclose(bert, [0, peak / 2, peak, peak / 2, 0], rtol=1e-6, atol=1e-12)
    for bad, message in (
        (dict(decay_proportion=1.5), r"train.decay_proportion must be in \[0, 1\], got 1.5"),
        (dict(decay_proportion=0.95), r"train.decay_proportion \(0.95\) leaves 5 steps before"),
        (dict(decay_shape="cosine"), "train.decay_shape 'cosine' is not one of linear, 1-sqrt"),
        (dict(kind="cosine"), "train.schedule 'cosine' is not one of linear, wsd"),
    ):
        with pytest.raises(UserError, match=message):
            optim.learning_rate_schedule(**{**common, **bad})


@pytest.fixture(scope="module")
def wiki(shared_data, tmp_path_factory):
    """One real Wikipedia file as a shard (uncased WordPiece), its documents' token ids, ids."""
    files, tokenizer = pipeline_data.write_wikipedia(
        shared_data, tmp_path_factory.mktemp("wiki"), num_files=1
    )
    documents = [records.decode_document(r)["token_ids"]
                 for r in records.read_framed_records(str(files[0]))]  # fmt: skip
    ids = SpecialIds(pad=tokenizer.pad_id, unk=tokenizer.unk_id, cls=tokenizer.cls_id,
                     sep=tokenizer.sep_id, mask=tokenizer.mask_id,
                     vocab_size=tokenizer.vocab_size)  # fmt: skip
    return files, [d for d in documents if d.size], ids


def _settings(pack_attention: str) -> batches.Settings:
    return batches.Settings(SEQ, round(0.3 * SEQ), "packed", 0.3, pack_attention=pack_attention)


def _parts(positions: np.ndarray, length: int) -> list[tuple[int, int]]:
    """[start, end) of each part of a row's first `length` positions (a part starts at 0)."""
    starts = np.flatnonzero(positions[:length] == 0).tolist()
    return list(zip(starts, [*starts[1:], length], strict=True))


def _found(corpus: bytes, tokens: np.ndarray, before: bool, after: bool) -> bool:
    """Whether `tokens` occur in a document of `corpus` (documents' int32 bytes, each between
    the markers -1 and -2), at its start (`before`) and end (`after`) if asked."""
    needle = np.concatenate([[-1] * before, tokens, [-2] * after]).astype(np.int32).tobytes()
    at = corpus.find(needle)
    while at != -1 and at % 4:  # only whole int32s count
        at = corpus.find(needle, at + 1)
    return at != -1


def test_document_packed_rows_restart_positions_at_each_document(wiki):
    """On real Wikipedia rows: the same tokens as pack_attention "row"; positions 0 at the
    [CLS] and at each later document's first token, counting up to the row's end; the first
    part ends a document, the last starts one, and every part between is a whole document."""
    files, documents, ids = wiki
    corpus = b"".join(np.concatenate([[-1], d, [-2]]).astype(np.int32).tobytes()
                      for d in documents)  # fmt: skip
    apart = next(instance_stream.make_instance_dataset(
        files, _settings("document"), ids, batch_size=ROWS).as_numpy_iterator())  # fmt: skip
    whole = next(instance_stream.make_instance_dataset(
        files, _settings("row"), ids, batch_size=ROWS).as_numpy_iterator())  # fmt: skip
    assert sorted(apart) == sorted([*whole, batches.POSITION_KEY])
    for key, value in whole.items():
        np.testing.assert_array_equal(apart[key], value, err_msg=key)
    crossing = 0
    for tokens, positions, mask in zip(apart["input_ids"], apart["position_ids"],
                                       apart["input_mask"], strict=True):  # fmt: skip
        end = int(mask.sum()) - 1  # the [SEP]
        parts = _parts(positions, end)
        crossing += len(parts) > 1
        for index, (start, stop) in enumerate(parts):
            np.testing.assert_array_equal(positions[start:stop], np.arange(stop - start))
            text = tokens[start + (index == 0) : stop]  # the [CLS] opens the first part
            assert _found(corpus, text, before=index > 0, after=index < len(parts) - 1), index
        last = parts[-1][0]
        np.testing.assert_array_equal(positions[last:], np.arange(SEQ - last))  # [SEP], padding
    assert crossing > 10, crossing  # rows do cross documents (Wikipedia's are long)
    masked = next(pretraining.make_pretraining_dataset(
        files, _settings("document"), ids, batch_size=ROWS).as_numpy_iterator())  # fmt: skip
    np.testing.assert_array_equal(masked["position_ids"], apart["position_ids"])


def test_each_document_of_a_packed_row_attends_only_to_itself(wiki):
    """Through the tiny modern encoder (local and global layers) on real masked rows: each
    document's part has the hidden states it has alone in a row (within 1e-5); without the
    position ids (pack_attention "row") the later parts do not."""
    files, _, ids = wiki
    batch = next(pretraining.make_pretraining_dataset(
        files, _settings("document"), ids, batch_size=ROWS).as_numpy_iterator())  # fmt: skip
    several = np.flatnonzero((batch["position_ids"][:, 1:] == 0).any(axis=1))  # [rows]
    batch = {k: v[np.concatenate([several[:14], [0, 1]])] for k, v in batch.items()}
    config = model_config(modernbert.get_config("size=tiny").model, ids.vocab_size)
    model = BertModel(config)
    params = model.init(jax.random.key(0), jnp.ones((1, SEQ), jnp.int32))

    @jax.jit
    def hidden(tokens, mask, positions=None):
        return model.apply(params, tokens, None, mask, position_ids=positions, pool=False)[0]

    packed = np.asarray(hidden(batch["input_ids"], batch["input_mask"], batch["position_ids"]))
    as_rows = np.asarray(hidden(batch["input_ids"], batch["input_mask"]))
    spans = [(row, start, stop) for row, mask in enumerate(batch["input_mask"])
             for start, stop in _parts(batch["position_ids"][row], int(mask.sum()))]  # fmt: skip
    assert len(spans) > len(batch["input_ids"])  # some rows hold several documents
    alone_ids = np.zeros((len(spans), SEQ), np.int32)  # each part alone at a row's start
    alone_mask = np.zeros((len(spans), SEQ), np.int32)
    for i, (row, start, stop) in enumerate(spans):
        alone_ids[i, : stop - start] = batch["input_ids"][row, start:stop]
        alone_mask[i, : stop - start] = 1
    alone = np.asarray(hidden(alone_ids, alone_mask))
    changed = []  # later parts' states when the whole row attends as one sequence
    for i, (row, start, stop) in enumerate(spans):
        np.testing.assert_allclose(packed[row, start:stop], alone[i, : stop - start], atol=1e-5,
                                   rtol=0, err_msg=f"row {row} [{start}, {stop})")  # fmt: skip
        if start > 0:
            changed.append(np.abs(as_rows[row, start:stop] - packed[row, start:stop]).max())
    assert min(changed) > 1e-3, min(changed)


def _tiny_args(shared_data, workdir, steps: int) -> list[str]:
    """main.py arguments: the tiny short recipe on one real Wikipedia file, `steps` steps."""
    wiki = shared_data / "wikipedia" / "AA"
    settings = {
        "data.input": ",".join(f"{wiki}/wiki_0{i}" for i in range(1)),
        "data.format": "wikiextractor",
        "data.tokenizer": shared_data / "vocab" / "bert-base-uncased-vocab.txt",
        "data.num_shards": 4,
        "train.batch_size": 16,
        "train.steps": steps,
        "train.log_every": 1,
        "train.eval_every": steps,
        "train.eval_batches": 2,
        "train.checkpoint_every": steps // 2,
    }
    return [sys.executable, str(ROOT / "main.py"), "--config=configs/modernbert.py:size=tiny,"
            "recipe=short", f"--workdir={workdir}",
            *(f"--config.{k}={v}" for k, v in settings.items())]  # fmt: skip


STEPS = 24


@pytest.fixture(scope="module")
def tiny_run(shared_data, tmp_path_factory):
    """The tiny modern recipe through main.py, uninterrupted (checkpoints at STEPS/2, STEPS)."""
    workdir = tmp_path_factory.mktemp("modern")
    result = run_job(_tiny_args(shared_data, workdir, STEPS), devices=1)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.full
def test_tiny_modern_run_learns_and_resumes_bitwise(shared_data, tiny_run, tmp_path):
    """The loss falls; a run killed after its halfway checkpoint and started again ends with
    the uninterrupted run's parameters, bit for bit, and its held-out results."""
    losses = [v for _, v in scalars(tiny_run, "train/loss")]
    assert len(losses) == STEPS
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    print(f"train loss: first 5 steps {first:.3f}, last 5 {last:.3f}")
    assert last < first - 1.0, (first, last)
    resumed = tmp_path / "resumed"
    shutil.copytree(tiny_run, resumed)
    for step in (resumed / "checkpoints").iterdir():  # killed after the halfway checkpoint
        if int(step.name) > STEPS // 2:
            shutil.rmtree(step)
    for stale in [resumed / "eval_results.json", *resumed.glob("events.out.tfevents.*")]:
        stale.unlink()
    result = run_job(_tiny_args(shared_data, resumed, STEPS), devices=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from step {STEPS // 2}" in result.stderr
    want, _ = checkpoints.load_params(tiny_run)
    got, meta = checkpoints.load_params(resumed)
    assert meta["step"] == STEPS
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert json.loads((resumed / "eval_results.json").read_text()) == json.loads(
        (tiny_run / "eval_results.json").read_text()
    )


@pytest.mark.full
def test_tiny_modern_run_exports_as_modernbert_for_masked_lm(tiny_run, tmp_path):
    """`python -m bert.convert WORKDIR DST --to=hf` writes a directory transformers loads as
    ModernBertForMaskedLM with nothing missing or unexpected, and its logits equal ours."""
    from bert import objectives, pretrained
    from bert.export import cli

    assert cli.main([str(tiny_run), str(tmp_path / "hf"), "--to=hf"]) == 0
    hf, info = transformers.ModernBertForMaskedLM.from_pretrained(
        tmp_path / "hf", attn_implementation="eager", output_loading_info=True
    )
    assert not any(info.values()), info
    loaded = pretrained.load(str(tiny_run))
    text = "the cat sat on the mat. " * 12  # longer than the local window's reach
    ids = np.array([loaded.tokenizer.build_inputs(loaded.tokenizer.encode_ids(text))[0]], np.int32)
    assert ids.shape[1] > loaded.config.local_window // 2
    ours = objectives.create("mlm", loaded.config).model.apply({"params": loaded.params}, ids)
    with torch.no_grad():
        theirs = hf.eval()(torch.from_numpy(ids).long()).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours["mlm_logits"]), theirs, rtol=0, atol=1e-5)


@pytest.mark.full
def test_a_modern_run_starts_the_glue_and_embeddings_jobs(shared_data, tiny_run, tmp_path):
    """The masked-LM run keeps an untrained BERT pooler, which ModernBERT's task and embedding
    models do not have; fine-tuning from the workdir (as the run's downstream probes do from its
    parameters) leaves it out. At learning rate 0 each job's encoder is the workdir's, and the
    classifier's head is the MLM head's transform."""
    from bert.jobs import downstream, embeddings, glue

    section = modernbert.get_config("size=tiny,recipe=short").downstream
    section.sst2_dir = str(shared_data / "glue" / "SST-2")
    section.stsb_train = str(shared_data / "stsbenchmark" / "sts-train.csv")
    section.stsb_dev = str(shared_data / "stsbenchmark" / "sts-dev.csv")
    section.train_limit, section.eval_limit, section.steps = 32, 16, 1
    section.batch_size, section.learning_rate, section.max_seq_length = 16, 0.0, 32
    want, _ = checkpoints.load_params(tiny_run)
    assert "pooler" in want["bert"]
    encoder = {k: v for k, v in want["bert"].items() if k != "pooler"}
    mlm_transform = {k: want["mlm"][k] for k in ("transform", "transform_norm")}
    for name, job in (("sst2", glue.run), ("stsb", embeddings.run)):
        config = downstream._job_config(name, section)
        config.init_from = str(tiny_run)
        job(config, str(tmp_path / name))
        got, _ = checkpoints.load_params(tmp_path / name)
        # the classifier also starts ModernBERT's head from the MLM head's transform
        expected = {"bert": encoder, **({"head": mlm_transform} if name == "sst2" else {})}
        started = {part: got[part] for part in expected}
        assert jax.tree.structure(started) == jax.tree.structure(expected), name
        for a, b in zip(jax.tree.leaves(started), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
