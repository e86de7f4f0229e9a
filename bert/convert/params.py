"""Parameter name mapping: our nested parameters <-> Hugging Face state dicts and Google TF
variables, through the one name table (bert/convert/name_table.py), with shape checks."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bert.convert.formats import CheckpointError
from bert.convert.name_table import (
    CLASSIFIER,
    ENCODER,
    HF_IGNORED,
    HF_TIED,
    QA_OUTPUTS,
    TF_TRAINING_NAMES,
    Entry,
    head_table,
    name_table,
)
from bert.heads import BertForPreTraining
from bert.layer_stack import as_unrolled
from bert.model import BertConfig


def expected_shapes(config: BertConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Our parameter shapes for `config` in the unrolled layout (the name table's, whatever
    config.scan_layers says), computed abstractly (no memory is allocated)."""
    config = dataclasses.replace(config, scan_layers=False)
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    abstract = jax.eval_shape(BertForPreTraining(config).init, jax.random.key(0), ids)
    flat = traverse_util.flatten_dict(abstract["params"])
    return {
        path: tuple(v.value.shape if hasattr(v, "value") else v.shape) for path, v in flat.items()
    }


def _listing(names: list[str], limit: int = 20) -> str:
    """Comma-separated names, cut after `limit` with a count of the rest."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... and {len(names) - limit} more"


def _check_shape(name: str, array: np.ndarray, shape: tuple[int, ...], where: str) -> None:
    if tuple(array.shape) != tuple(shape):
        raise CheckpointError(
            f"{where}: parameter {name} has shape {tuple(array.shape)} but the config "
            f"expects {tuple(shape)}"
        )


def _select(
    tensors: dict[str, np.ndarray],
    config: BertConfig,
    key: str,
    where: str,
    ignore_unknown: bool,
) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """Maps named source tensors (`key` is 'hf' or 'tf') onto our nested parameters."""
    table = name_table(config.num_layers)
    shapes = expected_shapes(config)
    by_group: dict[str, list[Entry]] = {}
    for entry in table:
        by_group.setdefault(entry.group, []).append(entry)
    unknown = sorted(set(tensors) - {getattr(e, key) for e in table})
    if unknown and not ignore_unknown:
        raise CheckpointError(f"{where}: unknown tensor names: {_listing(unknown)}")
    groups, flat = [], {}
    for group, entries in by_group.items():
        present = [e for e in entries if getattr(e, key) in tensors]
        if not present and group != ENCODER:
            continue
        if len(present) < len(entries):
            missing = [getattr(e, key) for e in entries if getattr(e, key) not in tensors]
            raise CheckpointError(f"{where}: missing tensors: {_listing(missing)}")
        groups.append(group)
        for e in entries:
            name = getattr(e, key)
            array = tensors[name]
            transposed = e.hf_transposed if key == "hf" else e.tf_transposed
            want = shapes[e.ours][::-1] if transposed else shapes[e.ours]
            _check_shape(name, array, want, where)
            array = array.T if transposed else array
            flat[e.ours] = np.ascontiguousarray(array, dtype=np.float32)
    params = traverse_util.unflatten_dict(flat)
    return params, tuple(groups), tuple(unknown)


def params_from_hf(
    tensors: dict[str, np.ndarray], config: BertConfig, where: str, ignore_unknown: bool = False
) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """Our parameters from an HF PyTorch-style state dict.

    Accepts both BertForPreTraining names (`bert.` prefix) and bare BertModel names, and the
    old LayerNorm `gamma`/`beta` names. Returns (params, groups present, ignored names).
    """
    tensors = dict(tensors)
    if not any(k.startswith("bert.") for k in tensors):
        tensors = {(k if k.startswith("cls.") else f"bert.{k}"): v for k, v in tensors.items()}
    old_names = (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias"))
    for old, new in old_names:
        tensors = {k.replace(old, new): v for k, v in tensors.items()}
    ignored = [k for k in HF_IGNORED if tensors.pop(k, None) is not None]
    for tied, owner in HF_TIED.items():
        if tied not in tensors:
            continue
        value = tensors.pop(tied)
        if owner not in tensors and tied.endswith(".bias"):
            tensors[owner] = value  # some checkpoints keep only the decoder's copy
        elif owner in tensors and not np.array_equal(value, tensors[owner]):
            raise CheckpointError(
                f"{where}: {tied} differs from {owner}; this model ties them, so the "
                "checkpoint cannot be represented exactly"
            )
        ignored.append(tied)
    heads = {head: _hf_head(tensors, head, config, where) for head in (CLASSIFIER, QA_OUTPUTS)}
    heads = {head: value for head, value in heads.items() if value is not None}
    params, groups, unknown = _select(tensors, config, "hf", where, ignore_unknown)
    return {**params, **heads}, groups + tuple(heads), tuple(ignored) + unknown


def _hf_head(
    tensors: dict[str, np.ndarray], head: str, config: BertConfig, where: str
) -> dict[str, np.ndarray] | None:
    """A fine-tuned head's parameters (CLASSIFIER: HF's sequence and token classifiers;
    QA_OUTPUTS: question answering), taken out of `tensors`; None where it has none."""
    entries = head_table(head)
    if not all(e.hf in tensors for e in entries):
        return None
    out = {}
    for e in entries:
        array = tensors.pop(e.hf)
        array = array.T if e.hf_transposed else array
        if array.ndim == 2 and array.shape[0] != config.hidden_size:
            raise CheckpointError(f"{where}: {e.hf} has shape {tuple(array.shape)}, which does "
                                  f"not fit hidden size {config.hidden_size}")  # fmt: skip
        out[e.ours[-1]] = np.ascontiguousarray(array, dtype=np.float32)
    return out


def params_to_hf(params: dict[str, Any], config: BertConfig) -> dict[str, np.ndarray]:
    """An HF state dict (BertForPreTraining names) for the groups present in `params` (in
    `config`'s layout: scanned layers are unstacked)."""
    params, config = as_unrolled(params, config)
    return _to_hf(params, name_table(config.num_layers))


def head_to_hf(params: dict[str, Any], head: str) -> dict[str, np.ndarray]:
    """An HF state dict of the fine-tuned head `head` (CLASSIFIER or QA_OUTPUTS) in `params`."""
    entries = head_table(head)
    flat = traverse_util.flatten_dict(params)
    missing = ["/".join(e.ours) for e in entries if e.ours not in flat]
    if missing:
        raise CheckpointError(f"the checkpoint has no {head} head: {_listing(missing)} missing")
    return _to_hf(params, entries)


def _to_hf(params: dict[str, Any], entries: list[Entry]) -> dict[str, np.ndarray]:
    flat = traverse_util.flatten_dict(params)
    state = {}
    for e in entries:
        if e.ours in flat:
            array = np.asarray(jax.device_get(flat[e.ours]), dtype=np.float32)
            state[e.hf] = np.ascontiguousarray(array.T if e.hf_transposed else array)
    return state


def flax_to_torch_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF Flax names (kernel/embedding/scale) -> HF PyTorch names (weight, transposed kernels)."""
    out = {}
    for name, array in tensors.items():
        stem, _, leaf = name.rpartition(".")
        if leaf == "kernel":
            out[f"{stem}.weight"] = array.T
        elif leaf in ("embedding", "scale"):
            out[f"{stem}.weight"] = array
        else:
            out[name] = array
    return out


def params_from_tf(
    tensors: dict[str, np.ndarray], config: BertConfig, where: str, ignore_unknown: bool = False
) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """Our parameters from Google TF variables, skipping optimizer slots and step counters."""
    known = {e.tf for e in name_table(config.num_layers)}
    model, ignored = {}, []
    for name, array in tensors.items():
        slot_of = name.rsplit("/", 1)[0]
        if name in TF_TRAINING_NAMES or (name not in known and slot_of in known):
            ignored.append(name)  # e.g. .../kernel/adam_m, global_step
        else:
            model[name] = array
    params, groups, unknown = _select(model, config, "tf", where, ignore_unknown)
    return params, groups, tuple(sorted(ignored)) + unknown


def groups_of(params: dict[str, Any], config: BertConfig) -> tuple[str, ...]:
    """The parameter groups present in `params` (in `config`'s layout), after checking names
    and shapes."""
    try:
        params, config = as_unrolled(params, config)
    except ValueError as e:  # a stacked tree of another shape
        raise CheckpointError(f"params: {e}") from None
    flat = traverse_util.flatten_dict(params)
    shapes = expected_shapes(config)
    unknown = sorted("/".join(p) for p in set(flat) - set(shapes))
    if unknown:
        raise CheckpointError(f"unknown parameters: {_listing(unknown)}")
    groups = []
    for e in name_table(config.num_layers):
        if e.ours in flat:
            _check_shape("/".join(e.ours), np.asarray(flat[e.ours]), shapes[e.ours], "params")
            if e.group not in groups:
                groups.append(e.group)
    if ENCODER not in groups:
        raise CheckpointError("params hold no encoder")
    return tuple(groups)
