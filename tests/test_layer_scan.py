"""Layers stacked with nn.scan (`model.scan_layers`) and rematerialised (`model.remat`) give the
unrolled stack's numbers: 2018 BERT and a ModernBERT-like encoder (rotary positions with two
thetas, local windows with a global layer every 3 of 7, no attention norm in layer 0), padded and
packed rows, outputs within 1e-6 and gradients within 1e-5; stacking and unstacking the
parameters are exact inverses, and every checkpoint boundary sees the unrolled layout."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from bert import convert, layer_stack
from bert.convert.params import groups_of, params_to_hf
from bert.heads import BertForPreTraining
from bert.jobs import pretrain
from bert.model import BertConfig, BertModel
from bert.objectives import MlmNsp
from bert.training import optim, sharding, step
from tests.train_helpers import synthetic_batch

TINY = dict(vocab_size=50, hidden_size=16, num_heads=2, intermediate_size=24,
            max_position_embeddings=32, hidden_dropout=0.0, attention_dropout=0.0)  # fmt: skip
CONFIGS = {
    "bert2018": BertConfig(**TINY, num_layers=3),
    "modernbert": BertConfig(**TINY, num_layers=7, position_embedding="rope", rope_theta=160000.0,
                             local_rope_theta=10000.0, pre_norm=True, embedding_norm=True,
                             norm_bias=False, gated_mlp=True, attention_bias=False,
                             mlp_bias=False, local_window=4, global_every=3, type_vocab_size=0,
                             layer_norm_eps=1e-5),
}  # fmt: skip
VARIANTS = [(scan, remat) for scan in (False, True) for remat in ("none", "full", "dots")]
LENGTH = 12  # wider than the local window (4): the local layers see less than the global ones


def _batches(name: str) -> dict[str, np.ndarray]:
    """Rows of 12, 7 and 3 real tokens, the rest padding; for the ModernBERT-like config also
    packed rows (position ids restarting at 0 where each sequence starts, padding at the end
    of the last) after them, the padded rows then with position ids 0..11."""
    rng = np.random.default_rng(1)
    ids = rng.integers(3, TINY["vocab_size"], (3, LENGTH)).astype(np.int32)
    mask = (np.arange(LENGTH)[None, :] < np.array([12, 7, 3])[:, None]).astype(np.int32)
    segments = (np.arange(LENGTH)[None, :] >= 6).repeat(3, 0).astype(np.int32)
    if name != "modernbert":
        return {"input_ids": ids * mask, "segment_ids": segments * mask, "input_mask": mask}
    packs = [[5, 4, 3], [7, 5], [2, 6]]  # sequence lengths per row; row 2 ends in padding
    positions = np.zeros((3, LENGTH), np.int32)
    for row, lengths in enumerate(packs):
        positions[row, : sum(lengths)] = np.concatenate([np.arange(n) for n in lengths])
    packed_mask = (np.arange(LENGTH)[None, :] < np.array([12, 12, 8])[:, None]).astype(np.int32)
    mask = np.concatenate([mask, packed_mask])
    positions = np.concatenate([np.arange(LENGTH)[None, :].repeat(3, 0), positions])
    return {"input_ids": np.concatenate([ids, ids]) * mask, "input_mask": mask,
            "position_ids": positions.astype(np.int32)}  # fmt: skip


def _random_params(model: nn.Module, seed: int = 2):
    """Parameters of `model`'s shapes drawn at random without compiling its init: norms off 1,
    biases off 0, so that a parameter used in the wrong layer shows."""
    ids = jax.ShapeDtypeStruct((1, LENGTH), jnp.int32)
    abstract = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), ids)["params"])
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        base = 1.0 if path[-1].key == "scale" else 0.0
        return jnp.asarray(base + 0.1 * rng.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def _outputs_and_grads(config: BertConfig, params, batch):
    """((sequence output, pooled output), gradient of a scalar loss of them)."""
    model = BertModel(config)
    weights = jax.random.normal(jax.random.key(3), (LENGTH, config.hidden_size))

    def loss(p):
        seq, pooled = model.apply({"params": p}, **batch)
        total = jnp.sum(seq * weights) + jnp.sum(pooled**2)
        return total / batch["input_ids"].size, (seq, pooled)  # gradients of order 1

    grads, out = jax.jit(jax.grad(loss, has_aux=True))(params)
    return out, grads


@functools.cache
def _params(name: str):
    """Random parameters of the unrolled encoder of CONFIGS[name]."""
    return _random_params(BertModel(CONFIGS[name]))


@functools.cache
def _reference(name: str):
    """(name, config, unrolled params, batch, the unrolled model's outputs and gradients)."""
    config, params, batch = CONFIGS[name], _params(name), _batches(name)
    return name, config, params, batch, _outputs_and_grads(config, params, batch)


def _max_diff(a, b) -> float:
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a, b)))


# the fast tier's variants; the full tier runs every one on both configs
FAST = {("modernbert", True, "none"), ("bert2018", True, "full")}
CASES = [
    pytest.param(name, scan, remat, marks=() if (name, scan, remat) in FAST else pytest.mark.full)
    for name in sorted(CONFIGS)
    for scan, remat in VARIANTS[1:]
]


@pytest.mark.parametrize("name,scan,remat", CASES)
def test_scan_and_remat_equal_the_unrolled_stack(name, scan, remat):
    _, config, params, batch, (want_out, want_grads) = _reference(name)
    variant = dataclasses.replace(config, scan_layers=scan, remat=remat)
    given = layer_stack.stack_layers(params, variant) if scan else params
    out, grads = _outputs_and_grads(variant, given, batch)
    if scan:
        assert set(grads) == set(given) and "layer_0" not in grads
        if config.pre_norm and config.embedding_norm:  # layer 0's unused norm: no gradient
            assert not np.any(grads["layers"]["attention_norm"]["scale"][0])
        grads = layer_stack.unstack_layers(grads, variant)
    assert jax.tree.structure(grads) == jax.tree.structure(want_grads)
    assert _max_diff(out, want_out) <= 1e-6
    assert _max_diff(grads, want_grads) <= 1e-5


def test_local_layers_and_packing_matter():
    """The reference is not degenerate: the local windows and the packing change the outputs."""
    _, config, params, batch, ((seq, _), _) = _reference("modernbert")
    assert float(jnp.max(jnp.abs(seq[3:] - seq[:3]))) > 1e-2  # the same ids, packed
    wide = dataclasses.replace(config, local_window=0)
    out = jax.jit(BertModel(wide).apply)({"params": params}, **batch)[0]
    assert float(jnp.max(jnp.abs(out - seq))) > 1e-2


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_stacked_layout_round_trip_is_exact(name):
    config, params = CONFIGS[name], _params(name)
    scanned = dataclasses.replace(config, scan_layers=True)
    stacked = layer_stack.stack_layers(params, scanned)
    # the scanned model's own tree: the same names, shapes and dtypes
    ids = jax.ShapeDtypeStruct((1, LENGTH), jnp.int32)
    init = nn.meta.unbox(jax.eval_shape(BertModel(scanned).init, jax.random.key(0), ids))
    shape = lambda x: (x.shape, x.dtype)  # noqa: E731
    assert jax.tree.map(shape, init["params"]) == jax.tree.map(shape, stacked)
    equal = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))  # noqa: E731
    back = layer_stack.unstack_layers(stacked, scanned)
    assert jax.tree.structure(back) == jax.tree.structure(params) and equal(back, params)
    again = layer_stack.stack_layers(back, scanned)
    assert jax.tree.structure(again) == jax.tree.structure(stacked) and equal(again, stacked)
    # a whole model's parameters: the encoder's layers converted, the heads as they are
    model = {"bert": params, "mlm": {"output_bias": jnp.zeros(3)}}
    assert equal(layer_stack.stack_layers(model, scanned), {**model, "bert": stacked})
    with pytest.raises(ValueError, match="stacked"):
        layer_stack.stack_layers(stacked, scanned)
    with pytest.raises(ValueError, match="unrolled already"):
        layer_stack.unstack_layers(params, scanned)


def test_lamb_trust_ratio_is_per_layer_when_stacked():
    """LAMB's trust ratio of a stacked parameter is each layer's own, as unrolled; layer 0's
    unused norm (zero gradient, as the scanned model gives it) stays where it is."""
    _, config, params, _, (_, grads) = _reference("modernbert")
    scanned = dataclasses.replace(config, scan_layers=True)
    tx = optim.make_optimizer("lamb", optim.learning_rate_schedule(1e-3, 0, 10), 0.01)
    update = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])
    want = update(grads, params)
    zeros = jax.tree.map(jnp.zeros_like, grads["layer_1"]["attention_norm"])
    stacked_grads = {**grads, "layer_0": {**grads["layer_0"], "attention_norm": zeros}}
    stacked = layer_stack.stack_layers(params, scanned)
    got = update(layer_stack.stack_layers(stacked_grads, scanned), stacked)
    assert float(jnp.max(jnp.abs(got["layers"]["attention_norm"]["scale"][0]))) == 0.0
    assert _max_diff(layer_stack.unstack_layers(got, scanned), want) <= 1e-7


def test_stacked_axis_maps_to_no_mesh_axis():
    config = dataclasses.replace(CONFIGS["bert2018"], scan_layers=True)
    ids = jax.ShapeDtypeStruct((1, LENGTH), jnp.int32)
    abstract = jax.eval_shape(BertModel(config).init, jax.random.key(0), ids)["params"]
    mesh = sharding.make_mesh((1, 2, 4))
    shardings = traverse_util.flatten_dict(sharding.logical_shardings(abstract, mesh))
    kernel = shardings[("layers", "attention", "query", "kernel")].spec
    assert tuple(kernel) == (None, "fsdp", "tensor")  # layers, embed, heads


def test_pretraining_model_with_scanned_encoder():
    """BertForPreTraining over a scanned, rematerialised encoder: the unrolled encoder's outputs
    under its heads; its parameters export (HF names) exactly as the unrolled ones."""
    _, config, encoder, batch, ((want_seq, want_pooled), _) = _reference("bert2018")
    scanned = dataclasses.replace(config, scan_layers=True, remat="full")
    params = {**_random_params(BertForPreTraining(config)), "bert": encoder}
    stacked = layer_stack.stack_layers(params, scanned)
    assert "layers" in stacked["bert"] and set(stacked) == set(params) == {"bert", "mlm", "nsp"}
    positions = jnp.array([[1, 4], [2, 5], [0, 1]], jnp.int32)
    out = jax.jit(BertForPreTraining(scanned).apply)(
        {"params": stacked}, **batch, masked_positions=positions
    )
    assert float(jnp.max(jnp.abs(out["sequence_output"] - want_seq))) <= 1e-6
    assert float(jnp.max(jnp.abs(out["pooled_output"] - want_pooled))) <= 1e-6
    assert out["mlm_logits"].shape == (3, 2, config.vocab_size) and out["nsp_logits"].shape == (
        3,
        2,
    )
    assert groups_of(stacked, scanned) == groups_of(params, config)
    state, want_state = params_to_hf(stacked, scanned), params_to_hf(params, config)
    assert sorted(state) == sorted(want_state)
    assert all(np.array_equal(state[k], want_state[k]) for k in state)


def test_checkpoints_leave_and_enter_unrolled(tmp_path):
    """A scanned model's export holds the unrolled layout (its model.json scan_layers false),
    and init_from brings it back stacked into a scanned model, bit for bit."""
    config = dataclasses.replace(CONFIGS["modernbert"], scan_layers=True)  # no token types
    unrolled = dataclasses.replace(config, scan_layers=False)
    model = BertForPreTraining(unrolled, with_nsp=False, with_pooler=False)
    params = layer_stack.stack_layers(jax.device_get(_random_params(model)), config)
    convert.save_orbax(params, config, tmp_path / "export")
    imported = convert.import_model(tmp_path / "export")
    assert not imported.config.scan_layers and "layer_6" in imported.params["bert"]
    back = pretrain.initial_params(str(tmp_path / "export"), config)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, back, params)))


def test_dropout_trains_under_scan_and_remat():
    """Training mode (dropout on) runs scanned and rematerialised: seeded, with finite
    gradients, and the dropout key changes the loss."""
    config = dataclasses.replace(CONFIGS["bert2018"], hidden_dropout=0.1,
                                 attention_dropout=0.1, scan_layers=True, remat="dots")  # fmt: skip
    batch = _batches("bert2018")
    model = BertModel(config)
    params = _random_params(model)

    @jax.jit
    def loss_and_grads(p, key):
        def loss(p):
            seq, _ = model.apply({"params": p}, **batch, deterministic=False, rngs={"dropout": key})
            return jnp.sum(seq**2)

        return jax.value_and_grad(loss)(p)

    loss1, grads = loss_and_grads(params, jax.random.key(5))
    assert float(loss_and_grads(params, jax.random.key(5))[0]) == float(loss1)
    assert float(loss_and_grads(params, jax.random.key(6))[0]) != float(loss1)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
    "fields,field",
    [({"remat": "some"}, "model.remat"), ({"scan_layers": "yes"}, "model.scan_layers")],
)
def test_bad_values_name_the_field(fields, field):
    with pytest.raises(ValueError, match=field):
        BertConfig(vocab_size=10, **fields)


@pytest.mark.full
def test_sharded_lamb_training_steps_equal_unrolled():
    """Two LAMB pre-training steps through the training machinery on a (2, 2, 2) mesh (stacked
    parameters sharded like the unrolled ones, the layer axis on no mesh axis): the unrolled
    run's parameters."""
    mesh = sharding.make_mesh((2, 2, 2))
    schedule = optim.learning_rate_schedule(1e-3, 0, 10)
    tx = optim.make_optimizer("lamb", schedule, weight_decay=0.01)
    config = dataclasses.replace(CONFIGS["bert2018"], vocab_size=101)
    start = None
    results = {}
    for scan in (False, True):
        c = dataclasses.replace(config, scan_layers=scan, remat="dots" if scan else "none")
        objective = MlmNsp(c)
        _, shardings = step.state_shardings(objective.model, tx, mesh, 16)
        given = layer_stack.stack_layers(start, c) if scan else start
        state = step.create_train_state(objective.model, tx, mesh, 0, 16, given, shardings)
        if start is None:
            start = jax.device_get(state.params)
        train = step.compile_train_step(objective, tx, schedule, mesh, shardings)
        for seed in (1, 2):
            state, _ = train(state, sharding.global_batch(synthetic_batch(seed), mesh))
        params = jax.device_get(state.params)
        results[scan] = layer_stack.unstack_layers(params, c) if scan else params
    assert _max_diff(results[True], results[False]) <= 1e-5
