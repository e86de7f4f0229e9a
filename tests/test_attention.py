"""The attention kernel a layer runs (`model.attention_impl`): auto takes cuDNN's fused attention
only where it computes what the layer needs, and the explicit path (dropout on the
probabilities) equals XLA's attention when nothing is dropped."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert import attention

GPU_BF16 = dict(dtype=jnp.bfloat16, head_dim=64, backend="gpu")


@pytest.mark.parametrize(
    "impl, dropout, full_mask, setting, want",
    [
        ("auto", False, False, GPU_BF16, "cudnn"),
        ("auto", True, False, GPU_BF16, "explicit"),  # cuDNN drops no probabilities
        ("auto", False, True, GPU_BF16, "xla"),  # packed rows or a local window: a full mask
        ("auto", False, False, {**GPU_BF16, "dtype": jnp.float32}, "xla"),
        ("auto", False, False, {**GPU_BF16, "head_dim": 160}, "xla"),
        ("auto", False, False, {**GPU_BF16, "backend": "cpu"}, "xla"),
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
