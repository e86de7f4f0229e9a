"""ModernBERT as transformers 4.57 defines it: our encoder with its modern options (rotary
positions with a theta per attention kind, pre-LN with a final norm, GeGLU, bias-free layers, a
local window with a global layer every N) equals `ModernBertModel` and `ModernBertForMaskedLM`
built with random weights: hidden states and logits within 1e-5, gradients within 1e-4. Packed
rows give each sequence the outputs it has alone."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util

from bert import convert
from bert.convert import modernbert_table
from bert.convert.formats import CheckpointError
from bert.export import cli
from bert.heads import BertForPreTraining
from bert.model import BertModel

SMALL = dict(vocab_size=101, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
             intermediate_size=40, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
             bos_token_id=2, cls_token_id=2, sep_token_id=1, reference_compile=False)  # fmt: skip
CONFIGS = {  # local windows narrower than the sequence (12 tokens)
    "window4_global2": dict(local_attention=4, global_attn_every_n_layers=2,
                            global_rope_theta=160000.0, local_rope_theta=10000.0),
    "window6_global3_biases": dict(local_attention=6, global_attn_every_n_layers=3,
                                   global_rope_theta=1000.0, local_rope_theta=50.0,
                                   norm_bias=True, attention_bias=True, mlp_bias=True,
                                   classifier_bias=True, hidden_activation="gelu_pytorch_tanh",
                                   classifier_activation="gelu_pytorch_tanh"),
}  # fmt: skip
LENGTHS = (12, 7, 3)  # real tokens per row; the rest is padding


def _hf(name: str, seed: int = 0) -> transformers.ModernBertForMaskedLM:
    config = transformers.ModernBertConfig(**SMALL, **CONFIGS[name])
    config._attn_implementation = "eager"  # the reference computation, mask by mask
    torch.manual_seed(seed)
    model = transformers.ModernBertForMaskedLM(config).eval()
    with torch.no_grad():  # norms away from 1 and biases away from 0, so that each one shows
        for parameter_name, p in model.named_parameters():
            if "norm" in parameter_name and parameter_name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif parameter_name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return model


def _inputs(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, SMALL["vocab_size"], (len(LENGTHS), max(LENGTHS))).astype(np.int32)
    mask = (np.arange(max(LENGTHS))[None, :] < np.array(LENGTHS)[:, None]).astype(np.int32)
    return ids * mask, mask  # padding is the pad id, 0


def _ours(model: transformers.ModernBertForMaskedLM):
    path = pathlib.Path("config.json")
    config = modernbert_table.config_from_hf(model.config.to_dict(), path)
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params = modernbert_table.params_from_hf(tensors, config)
    return config, jax.tree.map(jnp.asarray, params)


def _apply(config, params, ids, mask):
    model = BertForPreTraining(config, with_nsp=False, with_pooler=False)
    out = model.apply({"params": params}, ids, None, mask, deterministic=True)
    return out["sequence_output"], out["mlm_logits"]


def _real(x, mask) -> np.ndarray:
    return np.asarray(x)[np.asarray(mask).astype(bool)]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hidden_states_and_logits_equal_transformers(name):
    model = _hf(name)
    ids, mask = _inputs()
    with torch.no_grad():
        hidden = model.model(torch.from_numpy(ids).long(), torch.from_numpy(mask)).last_hidden_state
        logits = model(torch.from_numpy(ids).long(), torch.from_numpy(mask)).logits
    config, params = _ours(model)
    assert config.is_local(1) and not config.is_local(0)
    our_hidden, our_logits = _apply(config, params, ids, mask)
    np.testing.assert_allclose(_real(our_hidden, mask), _real(hidden.numpy(), mask), atol=1e-5,
                               rtol=0)  # fmt: skip
    np.testing.assert_allclose(_real(our_logits, mask), _real(logits.numpy(), mask), atol=1e-5,
                               rtol=0)  # fmt: skip


@pytest.mark.full
@pytest.mark.parametrize("name", list(CONFIGS))
def test_gradients_equal_transformers(name):
    """The gradient of one scalar of the logits (a fixed random weighting of the real
    positions') for every parameter, the tied embedding table included."""
    model = _hf(name)
    ids, mask = _inputs()
    weights = np.random.default_rng(2).normal(size=(*ids.shape, SMALL["vocab_size"]))
    weights = (weights * mask[..., None]).astype(np.float32)
    logits = model(torch.from_numpy(ids).long(), torch.from_numpy(mask)).logits
    (logits * torch.from_numpy(weights)).sum().backward()
    hf_grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
    config, params = _ours(model)

    def loss(params):
        return jnp.sum(_apply(config, params, ids, mask)[1] * weights)

    ours = traverse_util.flatten_dict(jax.grad(loss)(params))
    want = traverse_util.flatten_dict(modernbert_table.params_from_hf(hf_grads, config))
    assert ours.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_allclose(np.asarray(ours[key]), value, atol=1e-4, rtol=0,
                                   err_msg="/".join(key))  # fmt: skip


def test_import_then_export_is_bitwise():
    model = _hf("window6_global3_biases")
    config, params = _ours(model)
    back = modernbert_table.params_to_hf(jax.tree.map(np.asarray, params), config)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key
    again = modernbert_table.config_from_hf(modernbert_table.config_to_hf(config), "x")
    assert again == config


@pytest.mark.parametrize("name", list(CONFIGS))
def test_packed_rows_give_each_sequence_its_outputs_alone(name):
    """Two sequences in one row (positions restarting at the second) give the hidden states
    each has alone, through local and global layers."""
    config, params = _ours(_hf(name))
    rng = np.random.default_rng(3)
    first, second = rng.integers(3, 101, 7), rng.integers(3, 101, 5)
    encoder = BertModel(config)
    bert = {"params": params["bert"]}

    @jax.jit
    def hidden(ids, positions=None):
        return encoder.apply(bert, ids, None, jnp.ones_like(ids), position_ids=positions,
                             pool=False)[0][0]  # fmt: skip

    def alone(tokens):
        return hidden(jnp.asarray(tokens, jnp.int32)[None])

    row = jnp.asarray(np.concatenate([first, second]), jnp.int32)[None]
    packed = hidden(row, jnp.asarray(np.concatenate([np.arange(7), np.arange(5)]))[None])
    np.testing.assert_allclose(packed[:7], alone(first), atol=1e-6, rtol=0)
    np.testing.assert_allclose(packed[7:], alone(second), atol=1e-6, rtol=0)


def test_directories_import_and_export_as_transformers_saves_them(tmp_path):
    """A ModernBertForMaskedLM directory through `bert.convert` to an HF directory: the same
    tensors bit for bit, and transformers loads it with the same logits; a ModernBertModel
    directory (no head) too; a task class ours lacks (multiple choice) is refused in one line
    unless ignored."""
    model = _hf("window4_global2")
    model.save_pretrained(tmp_path / "mlm")
    assert cli.main([str(tmp_path / "mlm"), str(tmp_path / "out"), "--to=hf"]) == 0
    out = tmp_path / "out"
    loaded = transformers.ModernBertForMaskedLM.from_pretrained(out, attn_implementation="eager")
    assert loaded.config.global_attn_every_n_layers == 2 and loaded.config.local_attention == 4
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    ids, mask = _inputs()
    with torch.no_grad():
        logits = [m(torch.from_numpy(ids).long(), torch.from_numpy(mask)).logits.numpy()
                  for m in (model, loaded.eval())]  # fmt: skip
    np.testing.assert_array_equal(logits[0], logits[1])

    model.model.save_pretrained(tmp_path / "encoder")  # ModernBertModel
    imported = convert.import_model(tmp_path / "encoder")
    assert imported.groups == ("encoder",) and "mlm" not in imported.params
    convert.export_hf(imported.params, imported.config, tmp_path / "encoder_out")
    again = transformers.ModernBertModel.from_pretrained(tmp_path / "encoder_out").state_dict()
    assert all(torch.equal(model.model.state_dict()[k], again[k]) for k in again)

    config = transformers.ModernBertConfig(**SMALL, **CONFIGS["window4_global2"])
    transformers.ModernBertForMultipleChoice(config).save_pretrained(tmp_path / "choice")
    heads = (r"the ModernBERT task head of ModernBertForMultipleChoice \(classifier.bias, "
             r"classifier.weight\) is not supported \(only ModernBertForSequenceClassification, "
             r"ModernBertForTokenClassification, ModernBertForQuestionAnswering\)")  # fmt: skip
    with pytest.raises(CheckpointError, match=heads + "; pass --ignore_unknown"):
        convert.import_model(tmp_path / "choice")
    encoder_only = convert.import_model(tmp_path / "choice", ignore_unknown=True)
    assert encoder_only.groups == ("encoder",) and "head.dense.weight" in encoder_only.ignored
