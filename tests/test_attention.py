"""The attention kernel a layer runs (`model.attention_impl`): auto takes cuDNN's fused attention
only where it computes what the layer needs and the chunked kernel on CPUs; the chunked kernel
and the explicit path (dropout on the probabilities) equal XLA's attention (jax's
`dot_product_attention`) when nothing is dropped."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert import attention, chunked_attention

GPU_BF16 = dict(dtype=jnp.bfloat16, head_dim=64, backend="gpu", scores=8 * 12 * 512 * 512)
KINDS = ("chunked", "xla")  # the kernel tested, its reference
SMALL = 32 * 12 * 96 * 96  # scores of 13.5 MiB: the caches hold them


@pytest.mark.parametrize(
    "impl, dropout, full_mask, setting, want",
    [
        ("auto", False, False, GPU_BF16, "cudnn"),
        ("auto", True, False, GPU_BF16, "explicit"),  # cuDNN drops no probabilities
        ("auto", False, True, GPU_BF16, "xla"),  # packed rows or a local window: a full mask
        ("auto", False, False, {**GPU_BF16, "dtype": jnp.float32}, "xla"),
        ("auto", False, False, {**GPU_BF16, "head_dim": 160}, "xla"),
        ("auto", False, False, {**GPU_BF16, "backend": "cpu"}, "chunked"),
        ("auto", False, True, {**GPU_BF16, "backend": "cpu"}, "chunked"),
        ("auto", False, True, {**GPU_BF16, "backend": "cpu", "scores": SMALL}, "xla"),
        ("chunked", False, True, {**GPU_BF16, "backend": "cpu", "scores": SMALL}, "chunked"),
        ("auto", True, False, {**GPU_BF16, "backend": "cpu"}, "explicit"),
        ("chunked", False, True, GPU_BF16, "chunked"),
        ("auto", False, False, {**GPU_BF16, "backend": "tpu"}, "xla"),
        ("xla", False, False, GPU_BF16, "xla"),
        ("xla", True, False, GPU_BF16, "explicit"),
        ("cudnn", False, False, {**GPU_BF16, "dtype": jnp.float32}, "cudnn"),
    ],
)
def test_kernel_choice(impl, dropout, full_mask, setting, want):
    assert attention.kernel(impl, dropout=dropout, full_mask=full_mask, **setting) == want


@pytest.mark.parametrize("dropout, full_mask", [(True, False), (False, True)])
def test_cudnn_asked_for_what_it_cannot_compute_is_a_clear_error(dropout, full_mask):
    with pytest.raises(ValueError, match="model.attention_impl='cudnn' cannot"):
        attention.kernel("cudnn", dropout=dropout, full_mask=full_mask, **GPU_BF16)


def test_explicit_attention_without_dropout_equals_xla():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 6, 3, 8)), jnp.float32) for _ in range(3))
    input_mask = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2])
    mask = input_mask[:, None, None, :].astype(bool)
    explicit = attention.attend("explicit", q, k, v, mask, input_mask)
    xla = attention.attend("xla", q, k, v, mask, input_mask)
    np.testing.assert_allclose(np.asarray(explicit), np.asarray(xla), atol=1e-6, rtol=0)
    if jax.default_backend() == "gpu":  # cuDNN: half precision, padding from the lengths
        half = [x.astype(jnp.bfloat16) for x in (q, k, v)]
        cudnn = attention.attend("cudnn", *half, mask, input_mask)
        np.testing.assert_allclose(np.asarray(cudnn, np.float32), np.asarray(xla), atol=2e-2)


def _masks(batch: int, length: int) -> dict:
    """Right padding (row lengths 40, 25, 7 of 40), a local window of +-4 on it, and packed rows
    of four 10-token blocks on it (the third row's last blocks all padding: queries with no key
    to attend to)."""
    input_mask = jnp.asarray(np.arange(length)[None] < np.array([40, 25, 7])[:, None], jnp.int32)
    pad = input_mask[:, None, None, :].astype(bool)
    rows = np.arange(length)
    window = jnp.asarray(np.abs(rows[:, None] - rows[None]) <= 4)
    blocks = jnp.asarray(np.repeat(np.arange(4), 10)[None].repeat(batch, 0))
    packed = pad & (blocks[:, None, :, None] == blocks[:, None, None, :])
    return {"padded": pad, "local": pad & window, "packed": packed, "input_mask": input_mask}


F32, BF16 = (jnp.float32, 2e-6), (jnp.bfloat16, 1.6e-2)


@pytest.mark.parametrize(
    "mask_kind, band, dtype, atol",
    [("padded", 0, *F32), ("padded", 0, *BF16), ("local", 0, *F32), ("local", 5, *F32),
     ("packed", 0, *F32), ("packed", 5, *F32), ("packed", 5, *BF16)],
)  # fmt: skip
def test_chunked_attention_equals_xla(monkeypatch, mask_kind, band, dtype, atol):
    """Outputs and gradients of every query (those with no key to attend to too) within 2e-6 in
    float32 and one bfloat16 rounding step (values of magnitude < 4) in bfloat16; chunks of 5
    heads of 12, so that the last chunk is a remainder. With a band of 5 (the mask allows
    |i - j| <= 4 at most) each block of 5 queries reads 15 keys."""
    monkeypatch.setattr(chunked_attention, "CHUNK_BYTES", 5 * 4 * 40 * (40 if band == 0 else 15))
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(3, 40, 4, 16)), dtype) for _ in range(3))
    masks = _masks(3, 40)
    mask = masks[mask_kind] if band == 0 else masks[mask_kind] & masks["local"]
    assert mask_kind == "padded" or not jnp.all(jnp.any(mask, axis=-1))  # some with no key
    weights = jnp.asarray(rng.normal(size=q.shape), jnp.float32)

    @jax.jit
    def outputs(q, k, v):
        def loss(kind, q, k, v):
            out = attention.attend(kind, q, k, v, mask, masks["input_mask"], band=band)
            return jnp.sum(out.astype(jnp.float32) * weights), out

        grad = jax.grad(loss, argnums=(1, 2, 3), has_aux=True)
        return [[out, *grads] for grads, out in (grad(kind, q, k, v) for kind in KINDS)]

    for got, want in zip(*outputs(q, k, v), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   atol=atol, rtol=0)  # fmt: skip


def test_chunked_encoder_equals_xla():
    """The ModernBERT-like encoder of tests/test_layer_scan.py (local windows of 4 with a global
    layer every 3 of 7; padded and packed rows) with attention_impl "chunked" against XLA's
    attention (`auto` at its size): outputs within 1e-6, gradients within 1e-5. Its local layers
    read only the keys within 2 of each block of 2 queries."""
    from tests.test_layer_scan import CONFIGS, _max_diff, _outputs_and_grads, _reference

    _, config, params, batch, want = _reference("modernbert")
    chunked = dataclasses.replace(config, attention_impl="chunked")
    got = _outputs_and_grads(chunked, params, batch)
    assert config == CONFIGS["modernbert"] and config.attention_impl == "auto"
    scores = batch["input_ids"].size * config.num_heads * batch["input_ids"].shape[1]
    assert 4 * scores < attention.CHUNKED_FROM_BYTES  # auto: XLA's attention here
    assert _max_diff(got[0], want[0]) <= 1e-6
    assert _max_diff(got[1], want[1]) <= 1e-5
