"""Checkpoint directories: detect the format, import any of them into our parameters, and export
ours as an HF directory or our own Orbax format (written atomically, tokenizer files carried).

An HF directory has `config.json`; a Google directory has `bert_config.json` and
`bert_model.ckpt.*`; ours has `model.json` and `params/`.
"""

import dataclasses
import json
import pathlib
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from bert.convert import formats, modernbert_table
from bert.convert.formats import CheckpointError
from bert.convert.name_table import (
    ENCODER,
    MLM,
    NSP,
    OPTIONAL_GROUPS,
    QA_OUTPUTS,
    check_config_value,
    config_from_hf,
    config_to_hf,
)
from bert.convert.params import (
    expected_shapes,
    flax_to_torch_names,
    groups_of,
    params_from_hf,
    params_from_tf,
    params_to_hf,
)
from bert.layer_stack import as_unrolled
from bert.model import BertConfig


@dataclasses.dataclass
class Imported:
    """A model read from a checkpoint: config, parameters, and which heads it had."""

    config: BertConfig
    params: dict[str, Any]  # nested, ours; only the groups in `groups`
    groups: tuple[str, ...]  # ENCODER plus the optional groups present
    source_format: str  # "hf", "tf" or "orbax"
    source: pathlib.Path
    ignored: tuple[str, ...] = ()  # source tensors skipped on purpose (optimizer slots, ...)
    architecture: str = ""  # a ModernBERT task class read with its head (export_hf's argument)

    @property
    def missing_heads(self) -> tuple[str, ...]:
        """The optional groups the architecture has but the checkpoint lacks (ModernBERT's,
        config.prediction_head, have no pooler or next-sentence head to miss)."""
        groups = (MLM,) if self.config.prediction_head else OPTIONAL_GROUPS
        return tuple(g for g in groups if g not in self.groups)


def tf_prefix(path: pathlib.Path) -> bool:
    """Whether `path` is a Google TF checkpoint prefix (`.../bert_model.ckpt`, as Google's
    scripts take it) beside its `bert_config.json`."""
    index = path.with_name(path.name + ".index")
    return not path.exists() and index.is_file() and (path.parent / "bert_config.json").is_file()


def detect_format(path: pathlib.Path) -> str:
    """'orbax', 'hf' or 'tf' for a checkpoint directory (or a TF checkpoint prefix); a clear
    error otherwise."""
    if tf_prefix(path):
        return "tf"
    if not path.exists():
        raise CheckpointError(
            f"{path}: checkpoint directory not found (nor a Hub model id, org/name[@revision])"
        )
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
            return flax_to_torch_names(reader(file)), file
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
        fields = formats.read_json(path / "config.json")
        if fields.get("model_type") == modernbert_table.MODEL_TYPE:
            return _import_modernbert(path, fields, ignore_unknown)
        config = config_from_hf(fields, path / "config.json")
        tensors, file = _read_hf_tensors(path)
        params, groups, ignored = params_from_hf(tensors, config, str(file), ignore_unknown)
    else:
        prefix = str(path) if tf_prefix(path) else formats.find_tf_checkpoint(path)
        path = pathlib.Path(prefix).parent
        config_file = path / "bert_config.json"
        config = config_from_hf(formats.read_json(config_file), config_file)
        tensors = formats.read_tf_checkpoint(prefix)
        params, groups, ignored = params_from_tf(tensors, config, prefix, ignore_unknown)
    return Imported(config, params, groups, kind, path, ignored)


def _modernbert_class(fields: dict) -> str:
    """The class a ModernBERT config.json records (`architectures`), or ""."""
    names = fields.get("architectures")
    return names[0] if isinstance(names, list) and names and isinstance(names[0], str) else ""


def _import_modernbert(path: pathlib.Path, fields: dict, ignore_unknown: bool) -> Imported:
    """A ModernBertModel, ModernBertForMaskedLM or task class (modernbert_table.TASK_CLASSES)
    directory; another task class's head is refused unless `ignore_unknown` (then skipped)."""
    config = modernbert_table.config_from_hf(fields, path / "config.json")
    tensors, file = _read_hf_tensors(path)
    architecture = _modernbert_class(fields)
    task_head = modernbert_table.TASK_CLASSES.get(architecture)
    heads = [] if task_head else sorted(k for k in tensors if k.startswith("classifier."))
    if heads and not ignore_unknown:
        raise CheckpointError(
            f"{file}: the ModernBERT task head of {architecture or 'an unrecorded class'} "
            f"({', '.join(heads[:4])}) is not supported (only "
            f"{', '.join(modernbert_table.TASK_CLASSES)}); pass --ignore_unknown to take the "
            "encoder alone"
        )
    if heads:  # the task head's own transform shares the MLM head's names
        heads += sorted(k for k in tensors if k.startswith("head."))
    params = modernbert_table.params_from_hf(
        {k: v for k, v in tensors.items() if k not in heads}, config, task_head
    )
    _check_modernbert_shapes(params, config, file, path / "config.json", task_head)
    if task_head:
        groups = (ENCODER, modernbert_table.PREDICTION_HEAD, task_head)
        return Imported(config, params, groups, "hf", path, architecture=architecture)
    groups = (ENCODER, MLM) if "mlm" in params else (ENCODER,)
    return Imported(config, params, groups, "hf", path, tuple(heads))


def _check_modernbert_shapes(params, config, file, config_file, task_head) -> None:
    """Every parameter named and shaped as `config` gives; a task head's prediction head as the
    MLM head's transform, its classifier [hidden, labels] (2 labels for question answering)."""
    shapes = expected_shapes(config)
    kernel = params[task_head]["kernel"] if task_head else None  # [hidden, labels]
    labels = 2 if task_head == QA_OUTPUTS else (np.shape(kernel) or (0,))[-1]  # QA: start, end
    for key, value in traverse_util.flatten_dict(params).items():
        name, shape = "/".join(key), tuple(np.shape(value))
        if key[0] == modernbert_table.PREDICTION_HEAD:
            key = ("mlm", *key[1:])
        if key[0] == task_head:
            want = (config.hidden_size, labels) if key[-1] == "kernel" else (labels,)
        elif key in shapes:
            want = shapes[key]
        else:
            raise CheckpointError(f"{file}: unknown parameter {name}")
        if shape != want:
            raise CheckpointError(
                f"{file}: parameter {name} has shape {shape} but {config_file} gives {want}"
            )


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
    architecture: str = "",
) -> list[str]:
    """Writes an HF directory (config.json, model.safetensors, tokenizer files).

    A model with MLM and NSP heads is written with BertForPreTraining names; one without heads
    with bare BertModel names, as `save_pretrained` would. A ModernBERT model with a task head
    (`Imported.architecture`'s) is written as `architecture`, one of
    modernbert_table.TASK_CLASSES, with the labels of the config.json in `tokenizer_dir` (the
    source directory) where they fit. Returns the tokenizer files copied.
    """
    from safetensors.numpy import save_file

    params, config = as_unrolled(params, config)  # the checkpoint formats' layout
    if config.position_embedding == "rope":  # a ModernBERT encoder
        return _export_modernbert(
            params, config, destination, tokenizer_dir, overwrite, architecture
        )
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


def _export_modernbert(
    params, config, destination, tokenizer_dir, overwrite, architecture
) -> list[str]:
    """`export_hf` of a ModernBERT encoder: ModernBertForMaskedLM names with the MLM head, a
    task class's with a task head, else ModernBertModel's (without the `model.` prefix), as
    `save_pretrained` writes them."""
    from safetensors.numpy import save_file

    task = modernbert_table.PREDICTION_HEAD in params
    if task and architecture not in modernbert_table.TASK_CLASSES:
        raise CheckpointError(
            f"{destination}: a ModernBERT task head is written as one of "
            f"{', '.join(modernbert_table.TASK_CLASSES)}, not {architecture or 'no class'}"
        )
    if not task:
        architecture = "ModernBertForMaskedLM" if "mlm" in params else "ModernBertModel"
    state = modernbert_table.state_dict(params, config, architecture)
    with formats.atomic_directory(pathlib.Path(destination), overwrite) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        source = tokenizer_dir / "config.json" if tokenizer_dir else None
        fields = formats.read_json(source) if source and source.is_file() else {}
        if fields.get("model_type") != modernbert_table.MODEL_TYPE:
            fields = {}
        hf_config = modernbert_table.config_to_hf(config, architecture, fields or None)
        if task:
            labels = state["classifier.bias"].shape[0]
            hf_config.update(modernbert_table.label_fields(fields, labels))
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        return formats.copy_tokenizer_files(tokenizer_dir, tmp) if tokenizer_dir else []


def save_orbax(
    params: dict[str, Any],
    config: BertConfig,
    destination: str | pathlib.Path,
    tokenizer_dir: pathlib.Path | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Writes our format: `model.json` (config and heads), `params/` (Orbax), tokenizer files."""
    import orbax.checkpoint as ocp

    params, config = as_unrolled(params, config)  # model.json then records scan_layers false
    groups = groups_of(params, config)
    with formats.atomic_directory(pathlib.Path(destination), overwrite) as tmp:
        meta = {"format": "jax-bert", "version": 1, "groups": list(groups)}
        meta["config"] = dataclasses.asdict(config)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save((tmp / "params").absolute(), params)
            checkpointer.wait_until_finished()
        return formats.copy_tokenizer_files(tokenizer_dir, tmp) if tokenizer_dir else []


def read_model_json(path: pathlib.Path) -> BertConfig:
    """The model config in our format's `model.json` (written by `save_orbax`)."""
    fields = formats.read_json(path).get("config")
    if not isinstance(fields, dict):
        raise CheckpointError(f"{path}: no 'config' object")
    for name, value in fields.items():
        check_config_value(name, value, path, f"config.{name[:80]}")
    try:
        return BertConfig.from_dict(fields)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad model config ({str(e)[:200]})") from None


def load_orbax(path: pathlib.Path) -> Imported:
    """Reads a directory written by `save_orbax`."""
    import orbax.checkpoint as ocp

    config = read_model_json(path / "model.json")
    if not (path / "params").is_dir():
        raise CheckpointError(f"{path / 'params'}: parameter directory not found")
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore((path / "params").absolute())
    params = jax.tree.map(lambda x: np.asarray(x, dtype=np.float32), restored)
    groups = groups_of(params, config)
    return Imported(config, params, groups, "orbax", path)
