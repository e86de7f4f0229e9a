"""Our model equals Hugging Face's PyTorch BertForPreTraining: outputs, and the pre-training
objectives' losses and gradients (BertForPreTraining's, BertForMaskedLM's)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
import torch
import transformers
from flax import traverse_util

from bert import convert, objectives
from bert.convert import params as convert_params
from bert.heads import BertForPreTraining
from bert.model import BertConfig

OUTPUT_TOLERANCE = 1e-5  # max abs difference, float32
GRADIENT_TOLERANCE = 1e-4  # ||ours - theirs|| / ||theirs||, per parameter


@pytest.fixture(scope="module", params=sorted(reference.CONFIGS))
def converted(request, tmp_path_factory):
    """(HF model, our config, our params) after a real save + import of the HF directory."""
    hf = reference.hf_model(request.param)
    directory = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(directory)
    imported = convert.import_model(directory)
    assert imported.groups == ("encoder", "pooler", "mlm", "nsp")
    return request.param, hf, imported.config, imported.params


def test_outputs_equal_reference(converted):
    name, hf, config, params = converted
    inputs = reference.batch(reference.CONFIGS[name])
    want = reference.hf_forward(hf, inputs)
    got = BertForPreTraining(config).apply(
        {"params": params},
        inputs["input_ids"],
        inputs["token_type_ids"],
        inputs["attention_mask"],
    )
    for key in ("sequence_output", "pooled_output", "mlm_logits", "nsp_logits"):
        assert got[key].shape == want[key].shape, key
        error = float(np.max(np.abs(np.asarray(got[key]) - want[key])))
        assert error <= OUTPUT_TOLERANCE, f"{key}: max abs difference {error:.2e}"


def test_gathered_mlm_logits_equal_full(converted):
    name, _, config, params = converted
    inputs = reference.batch(reference.CONFIGS[name])
    model = BertForPreTraining(config)
    args = (inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
    full = model.apply({"params": params}, *args)["mlm_logits"]
    positions = np.array([[1, 5, 12], [0, 3, 6], [1, 0, 0]])
    gathered = model.apply({"params": params}, *args, masked_positions=positions)["mlm_logits"]
    want = np.take_along_axis(np.asarray(full), positions[..., None], axis=1)
    np.testing.assert_allclose(np.asarray(gathered), want, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def masked_lm(converted, tmp_path_factory):
    """HF BertForMaskedLM with the converted model's encoder and MLM head (no pooler, no NSP)."""
    name, hf, _, _ = converted
    directory = tmp_path_factory.mktemp(f"{name}_mlm")
    hf.save_pretrained(directory)
    return transformers.BertForMaskedLM.from_pretrained(directory).eval()


@pytest.mark.parametrize("objective", ["mlm_nsp", pytest.param("mlm", marks=pytest.mark.full)])
def test_objective_loss_and_gradients_equal_reference(converted, masked_lm, objective):
    """Each pre-training objective's loss and gradients (bert/objectives/, the train step's
    loss function on a pipeline-shaped batch) equal HF's: mlm_nsp BertForPreTraining with its
    MLM and NSP labels, mlm BertForMaskedLM with its MLM labels."""
    name, pretraining_hf, config, params = converted
    cfg = reference.CONFIGS[name]
    inputs = reference.batch(cfg, seed=1)
    rng = np.random.default_rng(2)
    # Three predictions per sequence, the third one padding for the shortest sequence.
    positions = np.array([[1, 4, 9], [2, 3, 6], [1, 0, 0]])
    weights = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 0]], np.float32)
    targets = rng.integers(0, cfg["vocab_size"], size=positions.shape)
    nsp_labels = np.array([0, 1, 1])

    labels = np.full(inputs["input_ids"].shape, -100)
    for b in range(positions.shape[0]):
        for p in range(positions.shape[1]):
            if weights[b, p]:
                labels[b, positions[b, p]] = targets[b, p]
    hf = pretraining_hf if objective == "mlm_nsp" else masked_lm
    extra = {"next_sentence_label": torch.from_numpy(nsp_labels)} if objective == "mlm_nsp" else {}
    hf.zero_grad()
    out = hf(**{k: torch.from_numpy(v) for k, v in inputs.items()},
             labels=torch.from_numpy(labels), **extra)  # fmt: skip
    out.loss.backward()
    hf_grads = {n: p.grad.numpy() for n, p in hf.named_parameters()}
    want, _, _ = convert_params.params_from_hf(hf_grads, config, "torch gradients")

    ours = objectives.create(objective, config)
    batch = {"input_ids": inputs["input_ids"], "segment_ids": inputs["token_type_ids"],
             "input_mask": inputs["attention_mask"], "masked_lm_positions": positions,
             "masked_lm_ids": targets, "masked_lm_weights": weights,
             "next_sentence_labels": nsp_labels}  # fmt: skip
    batch = {k: batch[k] for k in ours.batch_keys}
    mine = {k: v for k, v in params.items() if k in ("bert", *ours.heads)}

    def loss_fn(p):
        return ours.loss_fn(p, batch, None, None)[0]

    loss, grads = jax.value_and_grad(loss_fn)(jax.tree.map(jnp.asarray, mine))
    assert abs(float(loss) - out.loss.item()) <= 1e-5
    got = traverse_util.flatten_dict(grads)
    want = traverse_util.flatten_dict(want)
    pooler = {path for path in got if path[:2] == ("bert", "pooler")}
    if objective == "mlm":  # BertForMaskedLM has no pooler: ours gets no gradient there
        assert all(np.all(np.asarray(got.pop(path)) == 0) for path in pooler)
    assert set(got) == set(want)
    for path, reference_grad in want.items():
        if path[-2:] == ("key", "bias"):
            # Analytically zero (softmax is invariant to a per-query shift): both are noise.
            assert np.linalg.norm(np.asarray(got[path])) < 1e-6
            assert np.linalg.norm(reference_grad) < 1e-6
            continue
        norm = np.linalg.norm(reference_grad)
        assert norm > 0, f"{path}: the reference gradient is zero, the test would be vacuous"
        rel = np.linalg.norm(np.asarray(got[path]) - reference_grad) / norm
        assert rel <= GRADIENT_TOLERANCE, f"{'/'.join(path)}: relative difference {rel:.2e}"


def test_dropout_changes_outputs_and_is_seeded(converted):
    _, _, config, params = converted
    inputs = reference.batch(reference.CONFIGS[converted[0]])
    model = BertForPreTraining(config)
    args = (inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])

    def run(seed):
        rngs = {"dropout": jax.random.key(seed)}
        return model.apply({"params": params}, *args, deterministic=False, rngs=rngs)

    eval_out = model.apply({"params": params}, *args)["sequence_output"]
    a, b, c = run(0)["sequence_output"], run(0)["sequence_output"], run(1)["sequence_output"]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    assert not np.allclose(np.asarray(a), np.asarray(eval_out))


def test_bfloat16_compute_keeps_float32_params_and_logits(converted):
    name, hf, config, params = converted
    bf16 = BertConfig.from_dict({**config.__dict__, "dtype": "bfloat16"})
    inputs = reference.batch(reference.CONFIGS[name])
    model = BertForPreTraining(bf16)
    variables = model.init(jax.random.key(0), inputs["input_ids"])
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
    out = model.apply(
        {"params": params}, inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"]
    )
    assert out["mlm_logits"].dtype == jnp.float32 and out["nsp_logits"].dtype == jnp.float32
    assert out["sequence_output"].dtype == jnp.bfloat16
    want = reference.hf_forward(hf, inputs)["mlm_logits"]
    # bf16 has 8 bits of mantissa: the logits agree to a few percent of their spread.
    error = np.max(np.abs(np.asarray(out["mlm_logits"]) - want)) / np.std(want)
    assert error < 0.1, f"bf16 logits off by {error:.3f} standard deviations"


def test_explicit_attention_used_for_dropout_equals_fused(converted):
    """Training with attention dropout takes an explicit softmax path; at a vanishing rate it
    must give the fused jax.nn.dot_product_attention result."""
    name, _, config, params = converted
    inputs = reference.batch(reference.CONFIGS[name])
    args = (inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
    fused = BertForPreTraining(config).apply({"params": params}, *args)
    fields = {**config.__dict__, "hidden_dropout": 0.0, "attention_dropout": 1e-12}
    explicit = BertForPreTraining(BertConfig(**fields)).apply(
        {"params": params}, *args, deterministic=False, rngs={"dropout": jax.random.key(0)}
    )
    for key in ("sequence_output", "mlm_logits"):
        np.testing.assert_allclose(
            np.asarray(explicit[key]), np.asarray(fused[key]), rtol=0, atol=OUTPUT_TOLERANCE
        )


def test_cudnn_attention_with_dropout_is_a_clear_error(converted):
    _, _, config, params = converted
    cudnn = BertConfig(**{**config.__dict__, "attention_impl": "cudnn"})
    with pytest.raises(ValueError, match="cannot apply attention dropout; set model.attention"):
        BertForPreTraining(cudnn).apply(
            {"params": params},
            np.ones((1, 4), np.int32),
            deterministic=False,
            rngs={"dropout": jax.random.key(0)},
        )
