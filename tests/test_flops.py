"""The FLOP count behind MFU equals XLA's own count of the compiled forward pass, within the
elementwise work XLA adds and the count leaves out (softmax, norms, activations: under 10%)."""

import jax
import numpy as np
import pytest

from bert import flops
from bert.model import BertConfig, BertModel

FIELDS = dict(vocab_size=64, hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512,
              max_position_embeddings=256, hidden_dropout=0.0, attention_dropout=0.0)  # fmt: skip


@pytest.mark.parametrize("gated", [False, True])
def test_encoder_flops_equal_xla_cost_analysis(gated):
    config = BertConfig(**FIELDS, gated_mlp=gated, hidden_act="silu" if gated else "gelu")
    model = BertModel(config)
    ids = np.ones((1, 256), np.int32)
    params = model.init(jax.random.key(0), ids)
    compiled = jax.jit(lambda p, x: model.apply(p, x, pool=False)[0]).lower(params, ids).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    counted = flops.encoder_flops(config, 256)
    assert counted <= cost["flops"] <= 1.1 * counted, (counted, cost["flops"])
