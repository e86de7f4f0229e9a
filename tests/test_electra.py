"""ELECTRA as a pre-training objective (bert/objectives/electra.py, configs/electra.py): its
generator and discriminator losses and every gradient equal transformers' ElectraForMaskedLM +
ElectraForPreTraining sharing one embeddings module; bad settings are one clear line; the
configs carry the paper's shapes; and, in the full tier, a tiny run on real Wikipedia learns
beyond token frequencies, exports as the two transformers classes with our logits, and
fine-tunes from its discriminator."""

import dataclasses
import json
import math
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util

from bert import objectives, pretrained
from bert.convert import electra_table
from bert.jobs import pretrain
from bert.jobs.settings import model_config
from bert.model import BertConfig
from bert.training import step
from configs import electra as electra_config
from tests.test_pretrain_job import ROOT, environment, run_job
from util.errors import UserError

OPTIONS = dict(generator_size=0.5, generator_weight=1.0, discriminator_weight=50.0,
               temperature=1.0, disallow_correct=False)  # fmt: skip
# embeddings 24 wide, a generator 16 wide (2 heads of 8) and a discriminator 32 wide: both
# project their embeddings
CONFIG = BertConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                    intermediate_size=64, max_position_embeddings=40, type_vocab_size=3,
                    hidden_dropout=0.0, attention_dropout=0.0, embedding_size=24)  # fmt: skip
TOLERANCE = 1e-5


def _random_params(objective, seed: int = 0):
    """Every parameter random (LayerNorm scales near 1, biases included)."""
    init = objective.model.init(jax.random.key(seed), jnp.ones((1, 8), jnp.int32))["params"]
    flat = traverse_util.flatten_dict(nn.meta.unbox(init))
    rng = np.random.default_rng(seed)
    out = {}
    for path, value in flat.items():
        noise = rng.standard_normal(value.shape).astype(np.float32)
        out[path] = 1.0 + 0.1 * noise if path[-1] == "scale" else 0.05 * noise
    return traverse_util.unflatten_dict(out)


def _batch(vocab: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Three right-padded rows of two segments, 4 prediction slots each (the last row's last
    two are padding predictions, weight 0, pointing at position 0)."""
    rng = np.random.default_rng(seed)
    lengths, length = np.array([13, 9, 5]), 13
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, vocab, size=mask.shape).astype(np.int32) * mask
    segments = ((np.arange(length)[None, :] >= lengths[:, None] // 2) * mask).astype(np.int32)
    positions = np.array([[1, 4, 7, 11], [2, 3, 5, 8], [1, 3, 0, 0]], np.int32)
    weights = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]], np.float32)
    originals = np.take_along_axis(ids, positions, axis=1)
    masked = ids.copy()
    rows = np.arange(3)[:, None]
    masked[rows, positions] = np.where(weights > 0, 3, masked[rows, positions])  # [MASK]: id 3
    masked[0, 4] = originals[0, 1]  # one chosen token kept, as the pipeline does
    return {"input_ids": masked, "segment_ids": segments, "input_mask": mask,
            "masked_lm_positions": positions, "masked_lm_ids": originals,
            "masked_lm_weights": weights}  # fmt: skip


def _hf_models(params, objective):
    """transformers' generator and discriminator holding `params`, sharing one embeddings
    module (and the generator's output layer tied to its word table), float32, dropout 0."""
    c, g = objective.config, objective.generator_config
    pad = {"pad_token_id": 0}
    disc = transformers.ElectraForPreTraining(transformers.ElectraConfig(
        **electra_table.hf_config(c, electra_table.DISCRIMINATOR, 0) | pad))  # fmt: skip
    gen = transformers.ElectraForMaskedLM(transformers.ElectraConfig(
        **electra_table.hf_config(g, electra_table.GENERATOR, 0) | pad))  # fmt: skip
    for model, state in ((disc, electra_table.discriminator_state(params, c)),
                         (gen, electra_table.generator_state(params, c, g))):  # fmt: skip
        missing, unexpected = model.load_state_dict(
            {k: torch.from_numpy(v) for k, v in state.items()}, strict=False
        )
        assert not unexpected and set(missing) <= {"generator_lm_head.weight"}, (
            missing,
            unexpected,
        )
    gen.electra.embeddings = disc.electra.embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    disc.electra.embeddings.word_embeddings.padding_idx = None  # ours has no frozen padding row
    for model in (disc, gen):
        model.config._attn_implementation = "eager"
    return disc.eval(), gen.eval()


def test_losses_and_every_gradient_equal_transformers():
    """On the same weights, batch and sampled replacements, the generator's MLM loss, the
    discriminator's loss, the total (MLM + 50 x detection) and the gradient of every parameter
    (the shared embeddings collecting both losses' gradients) equal transformers' classes."""
    objective = objectives.create("electra", CONFIG, options=OPTIONS)
    g = objective.generator_config
    assert (g.hidden_size, g.num_heads, g.intermediate_size, g.embedding_width) == (16, 2, 32, 24)
    params = _random_params(objective)
    batch = _batch(CONFIG.vocab_size)
    rngs = step.step_rngs(0, jnp.int32(7))

    @jax.jit
    def ours(params):
        (loss, sums), grads = jax.value_and_grad(objective.loss_fn, has_aux=True)(
            params, batch, rngs, None
        )
        return loss, sums, grads, objective.outputs(params, batch, rngs)

    loss, sums, grads, out = ours(params)
    real = batch["masked_lm_weights"] > 0
    corrupted, replaced = np.asarray(out["corrupted"]), np.asarray(out["replaced"])
    assert 0 < replaced.sum() <= real.sum()  # the batch has replaced tokens to detect
    disc, gen = _hf_models(params, objective)
    labels = np.full(batch["input_ids"].shape, -100)
    rows = np.nonzero(real)[0]
    labels[rows, batch["masked_lm_positions"][real]] = batch["masked_lm_ids"][real]
    common = {"attention_mask": torch.from_numpy(batch["input_mask"]).long(),
              "token_type_ids": torch.from_numpy(batch["segment_ids"]).long()}  # fmt: skip
    gen_out = gen(torch.from_numpy(batch["input_ids"]).long(), labels=torch.tensor(labels),
                  **common)  # fmt: skip
    disc_out = disc(torch.from_numpy(corrupted).long(), labels=torch.from_numpy(replaced).long(),
                    **common)  # fmt: skip
    total = gen_out.loss + 50.0 * disc_out.loss
    total.backward()
    mlm_loss = sums["mlm_loss"][0] / sums["mlm_loss"][1]
    disc_loss = sums["disc_loss"][0] / sums["disc_loss"][1]
    np.testing.assert_allclose(float(mlm_loss), gen_out.loss.item(), rtol=TOLERANCE)
    np.testing.assert_allclose(float(disc_loss), disc_out.loss.item(), rtol=TOLERANCE)
    np.testing.assert_allclose(float(loss), total.item(), rtol=TOLERANCE)
    their_mlm = gen_out.logits.detach().numpy()[rows, batch["masked_lm_positions"][real]]
    np.testing.assert_allclose(np.asarray(out["mlm_logits"])[real], their_mlm, atol=TOLERANCE)
    mask = batch["input_mask"] > 0
    np.testing.assert_allclose(np.asarray(out["disc_logits"])[mask],
                               disc_out.logits.detach().numpy()[mask], atol=TOLERANCE)  # fmt: skip
    mine = {"discriminator": electra_table.discriminator_state(grads, CONFIG),
            "generator": electra_table.generator_state(grads, CONFIG, g)}  # fmt: skip
    # the shared embeddings' gradients (both losses') under each model's names
    for part, model in (("discriminator", disc), ("generator", gen)):
        theirs = {name: p.grad.numpy() for name, p in model.named_parameters()}
        assert set(mine[part]) == set(theirs), part
        for name, value in mine[part].items():
            np.testing.assert_allclose(value, theirs[name], rtol=0, atol=TOLERANCE,
                                       err_msg=f"{part} {name}")  # fmt: skip


def test_replacements_follow_the_generator_and_padding_predictions_change_nothing():
    """Sampling at temperature 1 draws from the generator's softmax; disallow_correct never
    draws the original; a padding prediction (weight 0) neither replaces nor labels."""
    logits = jnp.log(jnp.array([[[0.7, 0.2, 0.1]]]))  # [1, 1, 3]
    opts = objectives.check("electra", options=OPTIONS)
    draws = jax.vmap(lambda k: objectives.electra.sample(k, logits, jnp.zeros((1, 1), int), opts))(
        jax.random.split(jax.random.key(0), 20000)
    )
    shares = np.bincount(np.asarray(draws).ravel(), minlength=3) / draws.size
    np.testing.assert_allclose(shares, [0.7, 0.2, 0.1], atol=0.01)
    never = dataclasses.replace(opts, disallow_correct=True)
    draws = objectives.electra.sample(jax.random.key(1), jnp.zeros((4, 5, 3)),
                                      jnp.ones((4, 5), int), never)  # fmt: skip
    assert not np.any(np.asarray(draws) == 1)
    batch = _batch(CONFIG.vocab_size)
    sampled = np.full(batch["masked_lm_ids"].shape, 2)
    corrupted, replaced = objectives.electra.corrupt(batch, jnp.asarray(sampled))
    corrupted, replaced = np.asarray(corrupted), np.asarray(replaced)
    assert corrupted[2, 0] == batch["input_ids"][2, 0] and not replaced[2, 0]
    assert replaced.sum() == (batch["masked_lm_weights"] > 0).sum()  # no original is id 2
    np.testing.assert_array_equal(corrupted[replaced], 2)
    np.testing.assert_array_equal(corrupted[~replaced], batch["input_ids"][~replaced])


@pytest.mark.parametrize(
    "field, value, message",
    [("generator_size", 1.5, r"^config.electra.generator_size=1.5 must be in \(0, 1\]"),
     ("generator_size", 0.0, r"^config.electra.generator_size=0.0 must be a number above 0$"),
     ("discriminator_weight", 0.0, r"^config.electra.discriminator_weight=0.0 must be a number"),
     ("discriminator_weight", -1.0, r"^config.electra.discriminator_weight=-1.0 must be a num"),
     ("temperature", float("nan"), r"^config.electra.temperature=nan must be a number above 0"),
     ("disallow_correct", "yes", r"^config.electra.disallow_correct must be true or false$"),
     ("sample_harder", 1.0, r"^config.electra.sample_harder is not an ELECTRA option; known: ")],
)  # fmt: skip
def test_bad_settings_are_one_clear_error_before_any_data(field, value, message, tmp_path):
    config = electra_config.get_config("size=tiny,recipe=short")
    config.data.input = str(tmp_path / "absent" / "*.txt")  # never reached
    options = {**config.electra.to_dict(), field: value}
    with pytest.raises(UserError, match=message):
        objectives.create("electra", CONFIG, options=options)
    if field in config.electra:
        with config.electra.ignore_type():
            config.electra[field] = value
        with pytest.raises(UserError, match=message):
            pretrain.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "data").exists()


def test_bad_setting_through_main_is_one_line(tmp_path):
    args = [sys.executable, str(ROOT / "main.py"), "--config=configs/electra.py:size=tiny",
            f"--workdir={tmp_path}", "--config.electra.generator_size=2.0"]  # fmt: skip
    result = subprocess.run(args, cwd=ROOT, env=environment(), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].endswith(
        "config.electra.generator_size=2.0 must be in (0, 1]: the "
        "generator's width as a fraction of the discriminator's"
    ), lines
    assert "Traceback" not in result.stderr


def test_sizes_are_the_papers_and_every_recipe_builds():
    """ELECTRA-Small: 12 layers of 256 with embeddings 128 wide and a generator of 64 (one
    head of 64, feed-forward 256); Base's generator is a third of 768; each size's recipes give
    a config the job accepts, AdamW at Table 6's rates."""
    want = {"small": (12, 256, 4, 128, 64, 1, 256, 5e-4, 128),
            "base": (12, 768, 12, 768, 256, 4, 1024, 2e-4, 256),
            "large": (24, 1024, 16, 1024, 256, 4, 1024, 2e-4, 2048)}  # fmt: skip
    for size in electra_config.SIZES:
        for recipe in ("paper", "short"):
            config = electra_config.get_config(f"size={size},recipe={recipe},vocab_size=30522")
            model = model_config(config.model, 30522)
            objective = objectives.create("electra", model, options=config.electra.to_dict())
            g = objective.generator_config
            assert config.objective == "electra" and config.train.optimizer == "adamw"
            assert config.max_seq_length <= model.max_position_embeddings
            if recipe == "paper" and size in want:
                got = (model.num_layers, model.hidden_size, model.num_heads,
                       model.embedding_width, g.hidden_size, g.num_heads, g.intermediate_size,
                       config.train.learning_rate, config.train.batch_size)  # fmt: skip
                assert got == want[size], size
                assert config.electra.discriminator_weight == 50.0


def test_held_out_evaluation_is_deterministic():
    """Without training keys the replacements come from a fixed seed and the batch: the same
    metrics every time, with replaced tokens to score."""
    objective = objectives.create("electra", CONFIG, options=OPTIONS)
    params, batch = _random_params(objective), _batch(CONFIG.vocab_size)
    evaluate = jax.jit(lambda params, batch: step.eval_step(params, batch, objective=objective))
    first, second = evaluate(params, batch), evaluate(params, batch)
    assert jax.tree.map(float, first) == jax.tree.map(float, second)
    assert float(first["replaced_recall_count"]) > 0


STEPS = 300  # the learning run's steps


def _settings(shared_data) -> dict:
    """Config fields beside the tiny ELECTRA's short recipe (its SentencePiece model of 4,096
    BPE pieces trained on the corpus): STEPS steps on four Wikipedia files, rows of 64 tokens."""
    wiki = shared_data / "wikipedia" / "AA"
    return {
        "data.input": ",".join(f"{wiki}/wiki_0{i}" for i in range(4)),
        "data.format": "wikiextractor",
        "data.num_shards": 4,
        "max_seq_length": 64,
        "model.max_position_embeddings": 64,
        "data.max_predictions_per_seq": 10,
        "train.batch_size": 32,
        "train.steps": STEPS,
        "train.log_every": 50,
        "train.eval_every": STEPS,
        "train.eval_batches": 8,
        "train.checkpoint_every": STEPS,
    }


def _run_args(shared_data, workdir) -> list[str]:
    """main.py arguments of the learning run."""
    settings = _settings(shared_data)
    return [sys.executable, str(ROOT / "main.py"),
            "--config=configs/electra.py:size=tiny,recipe=short", f"--workdir={workdir}",
            *(f"--config.{k}={v}" for k, v in settings.items())]  # fmt: skip


@pytest.fixture(scope="module")
def electra_run(shared_data, tmp_path_factory):
    """The tiny ELECTRA trained STEPS steps through main.py."""
    workdir = tmp_path_factory.mktemp("electra")
    result = run_job(_run_args(shared_data, workdir), devices=1)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _held_out(shared_data, workdir):
    """The run's objective, its held-out batches and its STEPS training batches."""
    from input_pipeline import data_setup, pretraining

    config = electra_config.get_config("size=tiny,recipe=short")
    for key, value in _settings(shared_data).items():
        *sections, field = key.split(".")
        target = config[sections[0]] if sections else config
        target[field] = type(target[field])(value)
    data = data_setup.prepare_pretraining_data(pretrain.corpus(config), workdir)  # prepared
    ids = data.tokenizer.special_ids
    objective = objectives.create("electra", model_config(config.model, ids.vocab_size),
                                  options=config.electra.to_dict())  # fmt: skip
    settings = pretrain.batch_settings(config, objective)
    batch = config.train.batch_size
    held_out = pretrain.eval_batches_of(data.eval_files, config, settings, ids, objective, batch)
    seen = pretraining.make_pretraining_dataset(data.train_files, settings, ids, batch_size=batch,
                                                seed=config.seed)  # fmt: skip
    return objective, list(held_out), seen.take(STEPS).as_numpy_iterator()


def _frequency_baseline(held_out, seen, vocab_size: int) -> float:
    """The held-out MLM loss of a model predicting the masked tokens' frequencies in the run's
    training batches (their unigram distribution, counts + 0.5)."""

    def labels(batches):
        return np.concatenate([b["masked_lm_ids"][b["masked_lm_weights"] > 0] for b in batches])

    counts = np.bincount(labels(seen), minlength=vocab_size) + 0.5
    return float(-np.log(counts[labels(held_out)] / counts.sum()).mean())


def _detection_auc(objective, held_out, params) -> float:
    """The area under the ROC curve (scikit-learn's) of the discriminator's logits for
    "replaced" over the real tokens of the held-out batches, each corrupted by the generator's
    evaluation draw."""
    from sklearn.metrics import roc_auc_score

    outputs = jax.jit(lambda p, b: objective.outputs(p, b, None))
    scores, labels = [], []
    for batch in held_out:
        out = outputs(params, batch)
        real = np.asarray(batch["input_mask"]) > 0
        scores.append(np.asarray(out["disc_logits"])[real])
        labels.append(np.asarray(out["replaced"])[real])
    return float(roc_auc_score(np.concatenate(labels), np.concatenate(scores)))


@pytest.mark.full
def test_tiny_electra_learns_beyond_token_frequencies(shared_data, electra_run):
    """After STEPS steps the generator's held-out MLM loss is below what predicting token
    frequencies gives, and the discriminator ranks the replaced tokens above the originals:
    the area under its ROC curve is over one half, what any guess blind to the text gets
    (a constant one included). Measured (2026-12-07, loaded 2-core CPU): MLM 6.911 against the
    baseline's 7.024; AUC 0.550 over about 16,000 held-out tokens, where one standard error is
    about 0.007. At this budget the discriminator's probabilities stay below one half (recall
    0 at that threshold), and its loss beats the best constant's by only 0.005 (0.4027 against
    0.4078), a margin that a change of summation order in the compile moved by as much."""
    final = json.loads((electra_run / "eval_results.json").read_text())
    objective, held_out, seen = _held_out(shared_data, electra_run)
    entropy = _frequency_baseline(held_out, seen, objective.config.vocab_size)
    auc = _detection_auc(objective, held_out, pretrained.load(str(electra_run)).params)
    print(f"held out: {final}; frequency baseline loss {entropy:.3f}; detection AUC {auc:.4f}")
    assert final["mlm_loss"] < entropy - 0.05, (final, entropy)
    share = final["replaced_share"]
    assert 0.1 < share < 0.15, final  # 15% of the tokens chosen, few sampled right
    constant = -(share * math.log(share) + (1 - share) * math.log(1 - share))
    print(f"detection loss {final['disc_loss']:.4f}, the best constant's {constant:.4f}")
    assert auc > 0.52, auc


@pytest.mark.full
def test_tiny_electra_exports_as_transformers_discriminator_and_generator(electra_run, tmp_path):
    """`python -m bert.convert WORKDIR DST --to=hf` writes DST/discriminator and DST/generator,
    which transformers loads as ElectraForPreTraining and ElectraForMaskedLM with nothing
    missing or unexpected, their tokenizers giving our ids, their logits equal ours."""
    from bert.export import cli

    assert cli.main([str(electra_run), str(tmp_path / "hf"), "--to=hf"]) == 0
    loaded = pretrained.load(str(electra_run))
    text = ["the cat sat on the mat.", "He was born in London and studied physics there."]
    rows = [loaded.tokenizer.build_inputs(loaded.tokenizer.encode_ids(t))[0] for t in text]
    width = max(len(r) for r in rows)
    ids = np.zeros((2, width), np.int32)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    options = electra_config.electra_section(0.25).to_dict()
    model = objectives.create("electra", loaded.config, options=options).model
    variables = {"params": loaded.params}
    ours = {
        part: model.apply(variables, ids, input_mask=mask, method=method)
        for part, method in (("discriminator", "discriminate"), ("generator", "generate"))
    }
    classes = {"discriminator": transformers.ElectraForPreTraining,
               "generator": transformers.ElectraForMaskedLM}  # fmt: skip
    for part, hf_class in classes.items():
        directory = tmp_path / "hf" / part
        hf, info = hf_class.from_pretrained(directory, output_loading_info=True)
        assert not any(info.values()), (part, info)
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        encoded = tokenizer(text, padding=True, return_tensors="np")
        np.testing.assert_array_equal(encoded["input_ids"], ids)
        with torch.no_grad():
            inputs = {"input_ids": torch.from_numpy(ids).long(),
                      "attention_mask": torch.from_numpy(mask).long()}  # fmt: skip
            theirs = hf.eval()(**inputs).logits.numpy()
        real = mask > 0
        np.testing.assert_allclose(np.asarray(ours[part])[real], theirs[real], rtol=0,
                                   atol=TOLERANCE, err_msg=part)  # fmt: skip


@pytest.mark.full
def test_fine_tuning_starts_from_the_discriminator(shared_data, electra_run, tmp_path):
    """A GLUE job with init_from the ELECTRA workdir trains the discriminator's encoder (its
    embedding projection included), with a new pooler and classifier."""
    from bert.jobs import glue as glue_job
    from bert.training import checkpoints
    from configs import glue as glue_config

    config = glue_config.get_config("task=mrpc")
    config.init_from, config.data_dir = str(electra_run), str(shared_data / "glue" / "MRPC")
    config.max_seq_length, config.predict_splits = 64, ()
    config.train_limit, config.eval_limit, config.eval_batch_size = 32, 16, 16
    t = config.train
    t.batch_size, t.steps, t.learning_rate, t.log_every = 16, 1, 1e-9, 1
    t.checkpoint_every, t.async_checkpoints = 1, False
    glue_job.run(config, str(tmp_path))
    tuned, _ = checkpoints.load_params(tmp_path)
    start, _ = checkpoints.load_params(electra_run)
    assert set(tuned) == {"bert", "classifier"} and "pooler" in tuned["bert"]
    for path, value in traverse_util.flatten_dict(start["bert"]).items():
        got = traverse_util.flatten_dict(tuned["bert"])[path]
        np.testing.assert_allclose(np.asarray(got), np.asarray(value), atol=1e-6,
                                   err_msg="/".join(path))  # fmt: skip
