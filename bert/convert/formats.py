"""Low-level checkpoint file I/O: tensor readers for each format and atomic output directories.

Every reader returns a flat `{name: np.ndarray}` dict and raises a clear error naming the file.
The name mapping between formats lives in bert/convert/params.py.
"""

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from util import console, errors

# Files that describe a tokenizer; carried along when a checkpoint is converted.
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.model",
    "spiece.model",
)


class CheckpointError(errors.UserError):
    """A checkpoint that cannot be read as asked: the message names the file and the problem."""


def read_json(path: pathlib.Path) -> dict[str, Any]:
    """Reads a JSON object, with errors that name the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _to_numpy(name: str, value: Any, path: pathlib.Path) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiu" and array.dtype.name != "bfloat16":
        raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {array.dtype}")
    return array


def read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    """All tensors of one `.safetensors` file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            return {k: _to_numpy(k, f.get_tensor(k), path) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from None


def read_torch_bin(path: pathlib.Path) -> dict[str, np.ndarray]:
    """A PyTorch `.bin` state dict, loaded with `weights_only=True` (no code execution)."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading a PyTorch .bin file needs torch installed "
            "(pip install torch), or convert the checkpoint to safetensors"
        ) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(f"{path}: cannot load PyTorch weights ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k: _to_numpy(k, v.float().numpy(), path) for k, v in state.items()}


def read_flax_msgpack(path: pathlib.Path) -> dict[str, np.ndarray]:
    """A Flax msgpack parameter tree (HF `flax_model.msgpack`), flattened with '.' joins."""
    from flax import serialization, traverse_util

    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types on bad bytes
        raise CheckpointError(f"{path}: cannot read Flax msgpack ({e})") from None
    if isinstance(tree, dict) and set(tree) == {"params"}:
        tree = tree["params"]
    flat = traverse_util.flatten_dict(tree, sep=".")
    return {k: _to_numpy(k, v, path) for k, v in flat.items()}


def read_sharded(index_path: pathlib.Path, reader) -> dict[str, np.ndarray]:
    """A sharded checkpoint described by an HF `*.index.json` weight map."""
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_path}: no 'weight_map' object")
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index_path}: shard {shard_path} is missing")
        tensors.update(reader(shard_path))
    return tensors


def read_tf_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """All variables of a TF checkpoint (`prefix` as in `bert_model.ckpt`)."""
    tf = console.import_tensorflow()

    try:
        reader = tf.train.load_checkpoint(prefix)
        names = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, IndexError, ValueError) as e:  # IndexError: a cut index file
        raise CheckpointError(f"{prefix}: cannot read TF checkpoint ({e})") from None
    tensors = {}
    for name in names:
        try:
            value = reader.get_tensor(name)
        except (tf.errors.OpError, IndexError, ValueError) as e:  # a damaged data file
            raise CheckpointError(f"{prefix}: cannot read variable {name} ({e})") from None
        tensors[name] = _to_numpy(name, value, pathlib.Path(prefix))
    return tensors


def find_tf_checkpoint(directory: pathlib.Path) -> str:
    """The checkpoint prefix inside a Google BERT directory (`bert_model.ckpt` or the latest)."""
    if (directory / "bert_model.ckpt.index").is_file():
        return str(directory / "bert_model.ckpt")
    indexes = sorted(directory.glob("*.index"))
    if not indexes:
        raise CheckpointError(f"{directory}: no TF checkpoint (*.ckpt*.index) in the directory")
    if len(indexes) > 1 and (directory / "checkpoint").is_file():
        tf = console.import_tensorflow()

        latest = tf.train.latest_checkpoint(str(directory))
        if latest:
            return latest
    if len(indexes) > 1:
        names = ", ".join(p.name for p in indexes)
        raise CheckpointError(f"{directory}: several TF checkpoints ({names}); pass one prefix")
    return str(indexes[0])[: -len(".index")]


@contextlib.contextmanager
def atomic_directory(destination: pathlib.Path, overwrite: bool = False) -> Iterator[pathlib.Path]:
    """Yields a temporary directory that becomes `destination` only if the block succeeds.

    A failure removes the temporary directory, so no half-written output is left behind. An
    existing non-empty destination is an error unless `overwrite`, in which case it is replaced
    only after the new content is complete.
    """
    destination = pathlib.Path(destination)
    if destination.exists() and any(destination.iterdir()) and not overwrite:
        raise CheckpointError(f"{destination}: already exists and is not empty (use --overwrite)")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    try:
        yield tmp
        _as_created_normally(tmp)
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
            destination.rename(old)
            tmp.rename(destination)
            shutil.rmtree(old)
        else:
            tmp.rename(destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _as_created_normally(folder: pathlib.Path) -> None:
    """Gives a folder from mkdtemp (and its files) the permissions of a plain mkdir / open, so an
    export is as readable to others as any folder the user makes (mkdtemp makes it private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def copy_tokenizer_files(source: pathlib.Path, destination: pathlib.Path) -> list[str]:
    """Copies the tokenizer files found in `source` into `destination`; returns their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, destination / name)
            copied.append(name)
    return copied
