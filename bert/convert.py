"""Checkpoint conversion between our parameters, Hugging Face directories and Google TF checkpoints.

One name table (`name_table`) maps every parameter of ours to its Hugging Face (PyTorch) name and
its Google TF variable name. Importers read any source into `{hf_name: array}` or `{tf_name:
array}` and go through the table; exporters go the other way.

CLI:
  python -m bert.convert SRC DST --to=hf|orbax [--overwrite] [--ignore_unknown]

The source format is detected: an HF directory has `config.json`; a Google directory has
`bert_config.json` and `bert_model.ckpt.*`; ours has `model.json` and `params/`.
"""

import argparse
import dataclasses
import json
import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bert import formats
from bert.formats import CheckpointError
from bert.heads import BertForPreTraining
from bert.model import BertConfig
from bert.name_table import (  # noqa: F401 (re-exported for callers of convert)
    ENCODER,
    HF_IGNORED,
    HF_TIED,
    MLM,
    NSP,
    OPTIONAL_GROUPS,
    POOLER,
    TF_TRAINING_NAMES,
    Entry,
    config_from_hf,
    config_to_hf,
    name_table,
)

# ----------------------------------------------------------------------------- tensors


def expected_shapes(config: BertConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Our parameter shapes for `config`, computed abstractly (no memory is allocated)."""
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


@dataclasses.dataclass
class Imported:
    """A model read from a checkpoint: config, parameters, and which heads it had."""

    config: BertConfig
    params: dict[str, Any]  # nested, ours; only the groups in `groups`
    groups: tuple[str, ...]  # ENCODER plus the optional groups present
    source_format: str  # "hf", "tf" or "orbax"
    source: pathlib.Path
    ignored: tuple[str, ...] = ()  # source tensors skipped on purpose (optimizer slots, ...)

    @property
    def missing_heads(self) -> tuple[str, ...]:
        return tuple(g for g in OPTIONAL_GROUPS if g not in self.groups)


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
    params, groups, unknown = _select(tensors, config, "hf", where, ignore_unknown)
    return params, groups, tuple(ignored) + unknown


def params_to_hf(params: dict[str, Any], config: BertConfig) -> dict[str, np.ndarray]:
    """An HF state dict (BertForPreTraining names) for the groups present in `params`."""
    flat = traverse_util.flatten_dict(params)
    state = {}
    for e in name_table(config.num_layers):
        if e.ours in flat:
            array = np.asarray(jax.device_get(flat[e.ours]), dtype=np.float32)
            state[e.hf] = np.ascontiguousarray(array.T if e.hf_transposed else array)
    return state


def _flax_to_torch_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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


# ----------------------------------------------------------------------------- import / export


def detect_format(path: pathlib.Path) -> str:
    """'orbax', 'hf' or 'tf' for a checkpoint directory; a clear error otherwise."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected a checkpoint directory, got a file")
    if (path / "model.json").is_file():
        return "orbax"
    if (path / "config.json").is_file():
        return "hf"
    if (path / "bert_config.json").is_file():
        return "tf"
    raise CheckpointError(
        f"{path}: not a BERT checkpoint directory: expected config.json (Hugging Face), "
        "bert_config.json with bert_model.ckpt.* (Google TF) or model.json with params/ (ours)"
    )


def _read_hf_tensors(path: pathlib.Path) -> tuple[dict[str, np.ndarray], pathlib.Path]:
    """The weights of an HF directory: safetensors first, then PyTorch .bin, then Flax msgpack."""
    candidates = (
        ("model.safetensors", formats.read_safetensors),
        ("model.safetensors.index.json", None),
        ("pytorch_model.bin", formats.read_torch_bin),
        ("pytorch_model.bin.index.json", None),
        ("flax_model.msgpack", formats.read_flax_msgpack),
    )
    for name, reader in candidates:
        file = path / name
        if not file.is_file():
            continue
        if name == "flax_model.msgpack":
            return _flax_to_torch_names(reader(file)), file
        if reader is None:
            shard_reader = (
                formats.read_safetensors if "safetensors" in name else formats.read_torch_bin
            )
            return formats.read_sharded(file, shard_reader), file
        return reader(file), file
    names = ", ".join(n for n, _ in candidates)
    raise CheckpointError(f"{path}: no weights file (looked for {names})")


def import_model(path: str | pathlib.Path, ignore_unknown: bool = False) -> Imported:
    """Reads a checkpoint directory of any supported format into our parameters.

    Args:
      path: an HF directory, a Google TF checkpoint directory, or one of ours.
      ignore_unknown: skip tensors that the table does not know (e.g. a fine-tuned classifier)
        instead of failing.
    """
    path = pathlib.Path(path)
    kind = detect_format(path)
    if kind == "orbax":
        return load_orbax(path)
    if kind == "hf":
        config = config_from_hf(formats.read_json(path / "config.json"), path / "config.json")
        tensors, file = _read_hf_tensors(path)
        params, groups, ignored = params_from_hf(tensors, config, str(file), ignore_unknown)
    else:
        config_file = path / "bert_config.json"
        config = config_from_hf(formats.read_json(config_file), config_file)
        prefix = formats.find_tf_checkpoint(path)
        tensors = formats.read_tf_checkpoint(prefix)
        params, groups, ignored = params_from_tf(tensors, config, prefix, ignore_unknown)
    return Imported(config, params, groups, kind, path, ignored)


def _architecture(groups: tuple[str, ...]) -> str:
    if MLM in groups and NSP in groups:
        return "BertForPreTraining"
    return "BertForMaskedLM" if MLM in groups else "BertModel"


def export_hf(
    params: dict[str, Any],
    config: BertConfig,
    destination: str | pathlib.Path,
    tokenizer_dir: pathlib.Path | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Writes an HF directory (config.json, model.safetensors, tokenizer files).

    A model with MLM and NSP heads is written with BertForPreTraining names; one without heads
    with bare BertModel names, as `save_pretrained` would. Returns the tokenizer files copied.
    """
    from safetensors.numpy import save_file

    groups = groups_of(params, config)
    state = params_to_hf(params, config)
    architecture = _architecture(groups)
    if architecture == "BertModel":
        state = {k.removeprefix("bert."): v for k, v in state.items()}
    with formats.atomic_directory(pathlib.Path(destination), overwrite) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        hf_config = config_to_hf(config, architecture)
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        return formats.copy_tokenizer_files(tokenizer_dir, tmp) if tokenizer_dir else []


def groups_of(params: dict[str, Any], config: BertConfig) -> tuple[str, ...]:
    """The parameter groups present in `params`, after checking names and shapes."""
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


def save_orbax(
    params: dict[str, Any],
    config: BertConfig,
    destination: str | pathlib.Path,
    tokenizer_dir: pathlib.Path | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Writes our format: `model.json` (config and heads), `params/` (Orbax), tokenizer files."""
    import orbax.checkpoint as ocp

    groups = groups_of(params, config)
    with formats.atomic_directory(pathlib.Path(destination), overwrite) as tmp:
        meta = {"format": "jax-bert", "version": 1, "groups": list(groups)}
        meta["config"] = dataclasses.asdict(config)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save((tmp / "params").absolute(), params)
            checkpointer.wait_until_finished()
        return formats.copy_tokenizer_files(tokenizer_dir, tmp) if tokenizer_dir else []


def load_orbax(path: pathlib.Path) -> Imported:
    """Reads a directory written by `save_orbax`."""
    import orbax.checkpoint as ocp

    meta = formats.read_json(path / "model.json")
    try:
        config = BertConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / 'model.json'}: bad model config ({e})") from None
    if not (path / "params").is_dir():
        raise CheckpointError(f"{path / 'params'}: parameter directory not found")
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore((path / "params").absolute())
    params = jax.tree.map(lambda x: np.asarray(x, dtype=np.float32), restored)
    groups = groups_of(params, config)
    return Imported(config, params, groups, "orbax", path)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bert.convert",
        description="Convert BERT checkpoints: HF directory, Google TF checkpoint, or ours.",
    )
    parser.add_argument("source", help="checkpoint directory (format detected)")
    parser.add_argument("destination", help="output directory (must not exist or be empty)")
    parser.add_argument("--to", choices=("hf", "orbax"), required=True, help="output format")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output")
    parser.add_argument(
        "--ignore_unknown", action="store_true", help="skip source tensors the table does not know"
    )
    args = parser.parse_args(argv)
    try:
        model = import_model(args.source, ignore_unknown=args.ignore_unknown)
        writer = export_hf if args.to == "hf" else save_orbax
        copied = writer(model.params, model.config, args.destination, model.source, args.overwrite)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = model.config
    print(f"read {model.source_format} checkpoint {model.source}")
    print(
        f"  {c.num_layers} layers, width {c.hidden_size}, {c.num_heads} heads, "
        f"vocabulary {c.vocab_size}; groups: {', '.join(model.groups)}"
    )
    if model.missing_heads:
        print(f"  absent from the source, not written: {', '.join(model.missing_heads)}")
    if model.ignored:
        print(f"  skipped {len(model.ignored)} non-parameter tensors")
    print(f"wrote {args.to} directory {args.destination}")
    print(f"  tokenizer files: {', '.join(copied) if copied else 'none in the source'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
