"""The encoder's modern options in combinations no transformers class has (pre-LN with learned
positions and SwiGLU, post-LN with rotary positions and GeGLU, a local window without an
embedding norm ...) equal a direct NumPy computation of the same layers written from their
definitions: rotary positions as RoFormer (rotate-half form), pre-LN as Xiong et al. (2020),
GeGLU and SwiGLU as Shazeer (2020). Hidden states within 1e-5."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util
from scipy.special import erf

from bert.model import BertConfig, BertModel

BASE = dict(vocab_size=50, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=24,
            max_position_embeddings=16, hidden_dropout=0.0, attention_dropout=0.0,
            layer_norm_eps=1e-5)  # fmt: skip
COMBOS = {
    "preln_learned_swiglu": dict(pre_norm=True, gated_mlp=True, hidden_act="silu"),
    "postln_rope_geglu_no_biases": dict(
        position_embedding="rope", rope_theta=500.0, gated_mlp=True, attention_bias=False,
        mlp_bias=False, norm_bias=False, type_vocab_size=0,
    ),
    "preln_rope_local_no_embedding_norm": dict(
        pre_norm=True, position_embedding="rope", rope_theta=1000.0, local_rope_theta=20.0,
        local_window=4, global_every=2, embedding_norm=False, hidden_act="gelu_new",
    ),
    "preln_embedding_norm_modernbert_like": dict(
        pre_norm=True, position_embedding="rope", local_window=6, global_every=3,
        gated_mlp=True, norm_bias=False, attention_bias=False, mlp_bias=False, type_vocab_size=0,
    ),
}  # fmt: skip
LENGTHS = (11, 6, 2)


def _act(name: str, x: np.ndarray) -> np.ndarray:
    if name == "gelu":
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    if name == "gelu_new":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return x / (1 + np.exp(-x))  # silu


def _norm(x, p, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p.get("bias", 0.0)


def _linear(x, p):
    return x @ p["kernel"] + p.get("bias", 0.0)


def _rope(x, positions, theta):
    """x [batch, length, heads, dim]: pairs (i, i + dim/2) rotated by position * theta^(-2i/dim)."""
    half = x.shape[-1] // 2
    freqs = theta ** (-np.arange(half) * 2.0 / x.shape[-1])
    angles = positions[:, :, None, None] * np.concatenate([freqs, freqs])  # [b, l, 1, dim]
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * np.cos(angles) + rotated * np.sin(angles)


def _attention(x, p, c: BertConfig, mask, positions, local: bool):
    b, n, _ = x.shape
    q, k, v = (_linear(x, p[name]).reshape(b, n, c.num_heads, c.head_dim)
               for name in ("query", "key", "value"))  # fmt: skip
    if c.position_embedding == "rope":
        theta = c.local_rope_theta if local else c.rope_theta
        q, k = _rope(q, positions, theta), _rope(k, positions, theta)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(c.head_dim)
    allowed = mask[:, None, None, :].astype(bool)
    if local:
        distance = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
        allowed = allowed & (distance <= c.local_window // 2)
    scores = np.where(allowed, scores, -1e30)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, n, c.hidden_size)


def _mlp(x, p, c: BertConfig):
    h = _linear(x, p["intermediate"])
    if c.gated_mlp:
        h, gate = np.split(h, 2, axis=-1)
        return _linear(_act(c.hidden_act, h) * gate, p["output"])
    return _linear(_act(c.hidden_act, h), p["output"])


def reference(c: BertConfig, p: dict, ids, mask) -> np.ndarray:
    """The encoder's last hidden states, written from the definitions."""
    e = p["embeddings"]
    positions = np.broadcast_to(np.arange(ids.shape[1])[None], ids.shape).astype(np.float64)
    x = e["word_embeddings"][ids]
    if c.position_embedding == "learned":
        x = x + e["position_embeddings"][: ids.shape[1]][None]
    if c.type_vocab_size:
        x = x + e["token_type_embeddings"][0]
    if c.embedding_norm:
        x = _norm(x, e["layer_norm"], c.layer_norm_eps)
    for i in range(c.num_layers):
        layer, local = p[f"layer_{i}"], c.local_window > 0 and i % c.global_every != 0

        def attend(h, layer=layer, local=local):
            out = _attention(h, layer["attention"], c, mask, positions, local)
            return _linear(out, layer["attention_output"])

        if c.pre_norm:
            h = (
                x
                if i == 0 and c.embedding_norm
                else _norm(x, layer["attention_norm"], c.layer_norm_eps)
            )
            x = x + attend(h)
            x = x + _mlp(_norm(x, layer["output_norm"], c.layer_norm_eps), layer, c)
        else:
            x = _norm(x + attend(x), layer["attention_norm"], c.layer_norm_eps)
            x = _norm(x + _mlp(x, layer, c), layer["output_norm"], c.layer_norm_eps)
    if c.pre_norm:
        x = _norm(x, p["final_norm"], c.layer_norm_eps)
    return x


@pytest.mark.parametrize("name", list(COMBOS))
def test_encoder_options_equal_a_numpy_reference(name):
    config = BertConfig(**BASE, **COMBOS[name])
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config.vocab_size, (len(LENGTHS), max(LENGTHS))).astype(np.int32)
    mask = (np.arange(max(LENGTHS))[None] < np.array(LENGTHS)[:, None]).astype(np.int32)
    model = BertModel(config)
    params = nn.unbox(model.init(jax.random.key(1), ids, None, mask)["params"])
    flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, params))
    for key, value in flat.items():  # norms away from 1, biases away from 0: each one shows
        if key[-1] in ("scale", "bias"):
            flat[key] = value + rng.normal(0, 0.1, value.shape).astype(np.float32)
    params = traverse_util.unflatten_dict(flat)
    assert ("layer_0", "attention_norm", "scale") in flat or (
        config.pre_norm and config.embedding_norm
    )
    ours, _ = model.apply({"params": params}, ids, None, mask, pool=False)
    want = reference(config, jax.tree.map(lambda a: a.astype(np.float64), params), ids, mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(ours)[real], want[real], atol=1e-5, rtol=0)
