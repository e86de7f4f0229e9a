"""sentence-transformers directories: the module files around an HF model, read and written.

A sentence-transformers directory lists its modules in `modules.json`, in order: a Transformer
(the HF model and tokenizer, at the module's path, "" for the directory itself, with
`sentence_bert_config.json` beside them), a Pooling module (`<path>/config.json` naming the
pooling mode) and, optionally, Normalize (L2 normalisation; its folder may be absent, as it
holds no file). Those are the modules this project's BertForSentenceEmbedding computes; any
other module (Dense, WeightedLayerPooling, LayerNorm, ...) is refused with a UserError naming
modules.json and the module. Both the classic names (`sentence_transformers.models.Pooling`,
pooling_mode_* booleans) and sentence-transformers 5.x's (`....modules.pooling.Pooling`,
`pooling_mode`) are read; the classic ones are written, which every version loads.
"""

import dataclasses
import json
import pathlib
from typing import Any

from bert.convert.formats import CheckpointError, read_json
from bert.heads import POOLINGS

MODULES_FILE = "modules.json"
TRANSFORMER_CONFIG = "sentence_bert_config.json"
# The classic module names, as most Hub models hold them and every version reads them.
TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"
# Pooling config: the classic booleans, each with the mode it switches on.
LEGACY_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclasses.dataclass(frozen=True)
class SentenceConfig:
    """What a sentence-transformers directory says about its embeddings."""

    model_dir: pathlib.Path  # the Transformer module's folder: HF config, weights, tokenizer
    pooling: str  # one of bert.heads.POOLINGS
    normalize: bool  # a Normalize module follows the pooling
    dimension: int | None  # the Pooling module's embedding dimension, when recorded
    max_seq_length: int | None  # sentence_bert_config.json's, when recorded
    do_lower_case: bool  # the Transformer lower-cases text before its tokenizer


def is_sentence_transformers(path: str | pathlib.Path) -> bool:
    """Whether `path` is a folder with a modules.json."""
    return (pathlib.Path(path) / MODULES_FILE).is_file()


def _kind(module_type: str) -> str:
    """'transformer', 'pooling', 'normalize' or '' from a module's class path."""
    name = module_type.rsplit(".", 1)[-1]
    known = {"Transformer": "transformer", "Pooling": "pooling", "Normalize": "normalize"}
    return known.get(name, "") if module_type.startswith("sentence_transformers.") else ""


def _modules(path: pathlib.Path) -> list[dict[str, Any]]:
    file = path / MODULES_FILE
    try:
        modules = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(modules, list) or not modules:
        raise CheckpointError(f"{file}: expected a non-empty JSON list of modules")
    for i, module in enumerate(modules):
        if not isinstance(module, dict) or not isinstance(module.get("type"), str):
            raise CheckpointError(f"{file}: module {i} has no 'type' string")
        if not isinstance(module.get("path", ""), str):
            raise CheckpointError(f"{file}: module {i} ({module['type']}) has a non-string 'path'")
    kinds = [_kind(m["type"]) for m in modules]
    for module, kind in zip(modules, kinds, strict=True):
        if not kind:
            raise CheckpointError(
                f"{file}: module {module['type']!r} is not supported (this project computes "
                "Transformer, then Pooling, then optionally Normalize)"
            )
    if kinds not in (["transformer", "pooling"], ["transformer", "pooling", "normalize"]):
        raise CheckpointError(
            f"{file}: modules {', '.join(kinds)} are not Transformer, Pooling and optionally "
            "Normalize in that order"
        )
    return modules


def _pooling_mode(file: pathlib.Path) -> tuple[str, int | None]:
    """(mode, dimension) from a Pooling module's config.json, either version's fields."""
    config = read_json(file)
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [m for key, m in LEGACY_MODES.items() if config.get(key, False)]
        mode = modes or ["mean"]  # sentence-transformers' default when none is on
    modes = [mode] if isinstance(mode, str) else mode
    if not isinstance(modes, list) or len(modes) != 1 or modes[0] not in POOLINGS:
        raise CheckpointError(
            f"{file}: pooling {mode!r} is not supported (one of {', '.join(POOLINGS)})"
        )
    dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    if dimension is not None and not isinstance(dimension, int):
        raise CheckpointError(f"{file}: embedding dimension {dimension!r} is not an integer")
    return modes[0], dimension


def _transformer_config(folder: pathlib.Path) -> tuple[int | None, bool]:
    """(max_seq_length, do_lower_case) from sentence_bert_config.json, when it exists."""
    file = folder / TRANSFORMER_CONFIG
    if not file.is_file():
        return None, False
    config = read_json(file)
    length = config.get("max_seq_length")
    if length is not None and (not isinstance(length, int) or length < 2):
        raise CheckpointError(f"{file}: max_seq_length {length!r} is not an integer >= 2")
    lower = config.get("do_lower_case", False)
    if not isinstance(lower, bool):
        raise CheckpointError(f"{file}: do_lower_case {lower!r} is not true or false")
    return length, lower


def read(path: str | pathlib.Path) -> SentenceConfig:
    """Reads a sentence-transformers directory's modules.

    Raises:
      CheckpointError (a UserError): a malformed modules.json or module config, or a module
        this project does not compute; the message names the file and the module.
    """
    path = pathlib.Path(path)
    transformer, pooling, *rest = _modules(path)
    model_dir = path / transformer.get("path", "")
    mode, dimension = _pooling_mode(path / pooling.get("path", "") / "config.json")
    max_seq_length, lower = _transformer_config(model_dir)
    return SentenceConfig(model_dir, mode, bool(rest), dimension, max_seq_length, lower)


def write(
    directory: pathlib.Path,
    *,
    pooling: str,
    normalize: bool,
    dimension: int,
    max_seq_length: int,
) -> list[str]:
    """Writes the module files of a Transformer (the HF files already in `directory`), Pooling
    and, when `normalize`, Normalize; returns the files written."""
    if pooling not in POOLINGS:
        raise CheckpointError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    modules = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING}]  # fmt: skip
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": NORMALIZE})
        (directory / "2_Normalize").mkdir()
    pooling_config: dict[str, Any] = {"word_embedding_dimension": dimension}
    for key, mode in LEGACY_MODES.items():
        pooling_config[key] = mode == pooling
    (directory / "1_Pooling").mkdir()
    files = {
        MODULES_FILE: modules,
        TRANSFORMER_CONFIG: {"max_seq_length": max_seq_length, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        "1_Pooling/config.json": pooling_config,
    }
    for name, value in files.items():
        (directory / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    return list(files)
