"""The encoder's two parameter layouts, and conversion between them.

Unrolled (`config.scan_layers` False, and every checkpoint format: HF, Google TF, our exports):
one subtree per layer under the encoder, `layer_0`, `layer_1`, ... Scanned (`scan_layers` True,
bert/model.py): one subtree `layers` whose every array has a leading axis of length
`num_layers` (logical axis "layers"), layer i at index i. The scanned layers all have the same
parameters, so a parameter that some unrolled layer lacks (layer 0's attention norm after an
embedding norm, as ModernBERT) is stacked with its initial value there (a filler, unused by the
model, never decayed or updated: its gradient is zero) and dropped again when unstacking.

Parameters always travel with the config whose layout they are in (bert/pretrained.py's
`Pretrained`, a workdir's checkpoints with their recorded config): training keeps the model's
own layout, every import into a model converts with `relayout`, every export with `as_unrolled`.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bert.model import STACKED_LAYERS, BertConfig

Params = dict[str, Any]
ENCODER = "bert"  # the encoder's group in a model's parameters (heads.py's `bert`)


def _fillers(config: BertConfig) -> dict[int, Params]:
    """layer number -> the parameters its unrolled subtree lacks, at their initial values."""
    if not (config.pre_norm and config.embedding_norm):
        return {}
    norm = {"scale": np.ones(config.hidden_size, config.param_dtype)}
    if config.norm_bias:
        norm["bias"] = np.zeros(config.hidden_size, config.param_dtype)
    return {0: {"attention_norm": norm}}


def _stack(*arrays: Any) -> Any:
    """Arrays stacked on a new leading axis: NumPy's for host arrays, else JAX's."""
    if all(isinstance(a, np.ndarray) for a in arrays):
        return np.stack(arrays)
    return jnp.stack(arrays)


def _encoder_apply(fn, params: Params, config: BertConfig) -> Params:
    """`fn(encoder tree, config)` applied to the encoder in `params`: a model's parameters
    ({"bert": encoder, heads...}) or an encoder's own (BertModel's tree)."""
    if ENCODER in params:
        return {**params, ENCODER: fn(params[ENCODER], config)}
    return fn(params, config)


def _stack_encoder(encoder: Params, config: BertConfig) -> Params:
    if STACKED_LAYERS in encoder:
        raise ValueError(f"stack_layers: the layers are stacked ({STACKED_LAYERS!r}) already")
    names = [f"layer_{i}" for i in range(config.num_layers)]
    present = [n for n in names if n in encoder]
    if not present:  # no layers in this (partial) tree: nothing to stack
        return dict(encoder)
    if len(present) < len(names):
        missing = ", ".join(n for n in names if n not in encoder)
        raise ValueError(f"stack_layers: {config.num_layers} layers expected, missing {missing}")
    fillers = _fillers(config)
    layers = [{**fillers.get(i, {}), **encoder[n]} for i, n in enumerate(names)]
    structure = jax.tree.structure(layers[0])
    for name, layer in zip(names, layers, strict=True):
        if jax.tree.structure(layer) != structure:
            raise ValueError(f"stack_layers: {name}'s parameters are not named as layer_0's")
    rest = {k: v for k, v in encoder.items() if k not in names}
    return {**rest, STACKED_LAYERS: jax.tree.map(_stack, *layers)}


def _unstack_encoder(encoder: Params, config: BertConfig) -> Params:
    if STACKED_LAYERS not in encoder:
        if any(k.startswith("layer_") for k in encoder):
            raise ValueError(f"unstack_layers needs stacked layers ({STACKED_LAYERS!r}); these "
                             "are unrolled already")  # fmt: skip
        return dict(encoder)
    stacked = encoder[STACKED_LAYERS]
    for path, leaf in jax.tree_util.tree_leaves_with_path(stacked):
        if np.shape(leaf)[:1] != (config.num_layers,):
            name = STACKED_LAYERS + jax.tree_util.keystr(path)
            raise ValueError(
                f"unstack_layers: {name} has shape {np.shape(leaf)}, not {config.num_layers} layers"
            )
    fillers = _fillers(config)
    out = {k: v for k, v in encoder.items() if k != STACKED_LAYERS}
    for i in range(config.num_layers):
        layer = jax.tree.map(lambda leaf, i=i: leaf[i], stacked)
        out[f"layer_{i}"] = {k: v for k, v in layer.items() if k not in fillers.get(i, {})}
    return out


def stack_layers(params: Params, config: BertConfig) -> Params:
    """Unrolled parameters (`layer_0`, ..., `layer_{n-1}`) -> the scanned layout (one stacked
    `layers` subtree), whatever `config.scan_layers` says; fillers (see the module doc) at their
    initial values. `params`: a model's ({"bert": ..., heads}) or an encoder's own; a tree
    without layers is returned as it is.

    Raises:
      ValueError: some layers missing, or layers whose parameters are not named alike.
    """
    return _encoder_apply(_stack_encoder, params, config)


def unstack_layers(params: Params, config: BertConfig) -> Params:
    """`stack_layers` reversed, exactly: the fillers are dropped.

    Raises:
      ValueError: the layers are unrolled already, or the stacked axis is not num_layers long.
    """
    return _encoder_apply(_unstack_encoder, params, config)


def as_unrolled(params: Params, config: BertConfig) -> tuple[Params, BertConfig]:
    """(params, config) in the unrolled layout, the checkpoint formats' (config.scan_layers
    then False); unchanged when they are in it already."""
    if not config.scan_layers:
        return params, config
    return unstack_layers(params, config), dataclasses.replace(config, scan_layers=False)


def relayout(params: Params, source: BertConfig, target: BertConfig) -> Params:
    """Parameters in `source`'s layout (the checkpoint's config) -> `target`'s (the model's)."""
    if source.scan_layers == target.scan_layers:
        return params
    if target.scan_layers:
        return stack_layers(params, target)
    return unstack_layers(params, source)
