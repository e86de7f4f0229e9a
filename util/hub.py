"""The Hugging Face Hub: model ids (`org/name`, optional `@revision`) fetched once into
huggingface_hub's cache, the reachability check for `hf://` inputs, and uploads of exported
directories (HfApi.create_repo, then upload_folder as one commit).

Everything goes through huggingface_hub, so its environment variables apply: `HF_HOME` (or
`HF_HUB_CACHE`) says where the cache lives, `HF_ENDPOINT` which server to ask, `HF_TOKEN` (or
`hf auth login`) gives access to private and gated repositories, and `HF_HUB_OFFLINE=1` keeps
everything to the cache.

A model id downloads only what this project reads: the config, the one weights format the
loader would pick (safetensors first, as bert/convert reads them) and the tokenizer files, and
for a sentence-transformers model its module files (modules.json, sentence_bert_config.json, each
`N_Name/config.json`); a tokenizer id downloads only the tokenizer files. A string that names
an existing local path is always that path.
"""

import os
import pathlib
import re
from collections.abc import Sequence

from util.errors import UserError

# Tokenizer files, as bert/convert carries them and input_pipeline/tokenizers.py finds them.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "*.model")  # fmt: skip
# Model configs: Hugging Face, Google TF, ours (bert/convert/directories.py).
CONFIG_FILES = ("config.json", "bert_config.json", "model.json")
# Weights, in the order bert/convert reads them: (the file that marks the format, its files).
WEIGHTS = (
    ("model.safetensors", ("model.safetensors",)),
    ("model.safetensors.index.json", ("model.safetensors.index.json", "model-*.safetensors")),
    ("pytorch_model.bin", ("pytorch_model.bin",)),
    ("pytorch_model.bin.index.json", ("pytorch_model.bin.index.json", "pytorch_model-*.bin")),
    ("flax_model.msgpack", ("flax_model.msgpack",)),
    ("bert_model.ckpt.index", ("bert_model.ckpt.*",)),
    ("model.json", ("params/*", "params/**/*")),
)
# A sentence-transformers model's files besides the HF ones (bert/convert/st_modules.py).
SENTENCE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def parse_model_id(spec: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when `spec` has the shape `org/name[@revision]`, else None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # noqa: PLC0415

    if "://" in spec or spec.startswith(("/", ".", "~")):
        return None
    repo_id, at, revision = spec.partition("@")
    if repo_id.count("/") != 1 or (at and not revision):
        return None
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return repo_id, revision or None


def is_model_id(spec: str) -> bool:
    """Whether `spec` is read from the Hub: shaped as a model id, and no local path; nor is its
    first part a local folder (`runs/mni` beside `runs/` is a mistyped path, not a Hub id)."""
    if not spec or os.path.exists(spec) or os.path.isdir(spec.split("/")[0]):
        return False
    return parse_model_id(spec) is not None


def model_id_of(path: str) -> str | None:
    """`org/name@commit` for a file or folder of a Hub model's snapshot in huggingface_hub's
    cache (what a checkpoint records instead of the cache path, which is this machine's only);
    None for any other path."""
    from huggingface_hub import constants  # noqa: PLC0415

    try:
        parts = (
            pathlib.Path(os.path.abspath(path))
            .relative_to(os.path.abspath(constants.HF_HUB_CACHE))
            .parts
        )
    except ValueError:
        return None
    if len(parts) < 3 or parts[1] != "snapshots" or not parts[0].startswith("models--"):
        return None
    org_name = parts[0].removeprefix("models--").split("--")
    return f"{'/'.join(org_name)}@{parts[2]}" if len(org_name) == 2 else None


def local_path(spec: str, field: str, tokenizer_only: bool = False) -> str:
    """`spec` as something on this machine: itself, unless it is a Hub model id; then the folder
    of its files in huggingface_hub's cache (downloaded on first use).

    Args:
      spec: a local path (or any other path the caller reads), or `org/name[@revision]`.
      field: the config field it came from, for error messages.
      tokenizer_only: fetch the tokenizer files alone (not config and weights).

    Raises:
      UserError: no such model or revision on the Hub; offline (`HF_HUB_OFFLINE=1` or no
        network) and not in the cache.
    """
    if not is_model_id(spec):
        return spec
    repo_id, revision = parse_model_id(spec)
    return str(_fetch(repo_id, revision, spec, field, tokenizer_only))


def _fetch(repo_id: str, revision: str | None, spec: str, field: str, tokenizer_only: bool):
    import huggingface_hub as hf  # noqa: PLC0415 (only Hub ids need it)
    import requests  # noqa: PLC0415
    from huggingface_hub import constants, errors  # noqa: PLC0415

    if constants.HF_HUB_OFFLINE:
        return _cached(repo_id, revision, spec, field, tokenizer_only, "HF_HUB_OFFLINE is set")
    try:
        info = hf.HfApi().model_info(
            repo_id, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT
        )
    except errors.RevisionNotFoundError:
        raise UserError(
            f"{field}={spec!r}: the Hub model {repo_id} has no revision {revision!r}"
        ) from None
    except errors.RepositoryNotFoundError:
        raise UserError(
            f"{field}={spec!r}: no such local path, and no model {repo_id!r} on the Hugging Face "
            "Hub (a private or gated one needs HF_TOKEN or `hf auth login`)"
        ) from None
    except (requests.ConnectionError, requests.Timeout) as e:
        reason = f"the Hub at {constants.ENDPOINT} cannot be reached ({type(e).__name__})"
        return _cached(repo_id, revision, spec, field, tokenizer_only, reason)
    except errors.HfHubHTTPError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{field}={spec!r}: the Hugging Face Hub answered: {first}") from None
    names = [s.rfilename for s in info.siblings or []]
    patterns = files_to_fetch(names, spec, field, tokenizer_only)
    return pathlib.Path(hf.snapshot_download(repo_id, revision=revision, allow_patterns=patterns))


def files_to_fetch(names: Sequence[str], spec: str, field: str, tokenizer_only: bool) -> list[str]:
    """The patterns of the files to download, out of the repository's file `names`."""
    import fnmatch  # noqa: PLC0415

    top = [n for n in names if "/" not in n]  # the loaders look beside the config only
    tokenizer = [n for n in top if any(fnmatch.fnmatch(n, p) for p in TOKENIZER_FILES)]
    if tokenizer_only:
        if not tokenizer:
            raise UserError(f"{field}={spec!r}: the Hub repository holds no tokenizer file "
                            f"({', '.join(TOKENIZER_FILES)})")  # fmt: skip
        return tokenizer
    weights = next((files for marker, files in WEIGHTS if marker in top), None)
    configs = [c for c in CONFIG_FILES if c in top]
    if weights is None or not configs:
        raise UserError(
            f"{field}={spec!r}: the Hub repository holds no BERT checkpoint this project reads "
            "(config.json with model.safetensors, pytorch_model.bin or flax_model.msgpack; "
            "bert_config.json with bert_model.ckpt.*)"
        )
    sentence = []
    if "modules.json" in top:  # its modules' configs sit in folders named like 1_Pooling
        modules = [n for n in names if re.fullmatch(r"\d+_[^/]+/config\.json", n)]
        sentence = [n for n in SENTENCE_FILES if n in top] + modules
    return configs + list(weights) + tokenizer + sentence


def _cached(repo_id, revision, spec: str, field: str, tokenizer_only: bool, reason: str):
    """The cached snapshot folder, when the files a load needs are there."""
    import huggingface_hub as hf  # noqa: PLC0415
    from huggingface_hub import constants, errors  # noqa: PLC0415

    advice = (f"{field}={spec!r}: no such local path, and as a Hub model id it is not in the "
              f"Hugging Face cache ({constants.HF_HUB_CACHE}) while {reason}; run once with "
              "network access, or give a local path")  # fmt: skip
    try:
        folder = pathlib.Path(hf.snapshot_download(repo_id, revision=revision,
                                                   local_files_only=True))  # fmt: skip
    except errors.LocalEntryNotFoundError:
        raise UserError(advice) from None
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    try:
        files_to_fetch(names, spec, field, tokenizer_only)  # the cache may hold only a part
    except UserError:
        raise UserError(advice) from None
    return folder


def check_hub_inputs(patterns: Sequence[str], field: str, instead: str) -> None:
    """Fails at once, naming what to pass `instead`, when `patterns` hold `hf://` paths and the
    Hub cannot be reached (HF_HUB_OFFLINE set, or no network); does nothing otherwise.

    Args:
      patterns: input paths or globs.
      field: the config field they came from.
      instead: what the user can pass instead, e.g. a local glob.
    """
    remote = [p for p in patterns if p.startswith("hf://")]
    if not remote:
        return
    import huggingface_hub as hf  # noqa: PLC0415
    import requests  # noqa: PLC0415
    from huggingface_hub import constants, errors  # noqa: PLC0415

    if constants.HF_HUB_OFFLINE:
        raise UserError(f"{field}={remote[0]!r} is on the Hugging Face Hub, but HF_HUB_OFFLINE "
                        f"is set. {instead}")  # fmt: skip
    repo_type, repo_id = _repo_of(remote[0])
    if repo_id is None:
        return  # a shape we do not know: the reader reports it
    try:
        hf.HfApi().repo_info(repo_id, repo_type=repo_type, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except (requests.ConnectionError, requests.Timeout) as e:
        raise UserError(
            f"{field}={remote[0]!r} is on the Hugging Face Hub, which cannot be reached from "
            f"here ({constants.ENDPOINT}: {type(e).__name__}). {instead}"
        ) from None
    except errors.HfHubHTTPError:
        return  # reachable; the reader names what is wrong with the path


def _repo_of(url: str) -> tuple[str, str | None]:
    """(repo type, repo id) of an `hf://[datasets/|spaces/]org/name[@rev]/path` URL."""
    parts = url.removeprefix("hf://").split("/")
    repo_type = "model"
    if parts[0] in ("datasets", "spaces"):
        repo_type, parts = parts[0][:-1], parts[1:]
    if len(parts) < 2:
        return repo_type, None
    return repo_type, f"{parts[0]}/{parts[1].split('@')[0]}"


def check_repo_id(repo_id: str) -> None:
    """Raises UserError unless `repo_id` is a valid Hub repository id ("org/name")."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UserError(f"--push_to_hub={repo_id}: {_first_line(e)}") from None


def push_to_hub(
    directory: str | pathlib.Path,
    repo_id: str,
    private: bool = False,
    endpoint: str | None = None,
) -> str:
    """Creates the model repository `repo_id` if needed and uploads `directory` into it.

    Args:
      directory: an HF directory (e.g. written by bert.convert).
      repo_id: "org/name" on the Hub.
      private: create the repository private (an existing one is left as it is).
      endpoint: the Hub's address; None: huggingface_hub's (HF_ENDPOINT or huggingface.co).

    Returns:
      The URL of the commit.

    Raises:
      UserError: an invalid repository id, no token, no network, or a refusal by the Hub.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalTokenNotFoundError,
        OfflineModeIsEnabled,
    )

    api = HfApi(endpoint=endpoint)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(directory), commit_message="Upload from jax-bert"
        )
    except (HfHubHTTPError, HFValidationError, LocalTokenNotFoundError, OfflineModeIsEnabled) as e:
        raise UserError(f"--push_to_hub={repo_id}: {_first_line(e)}") from None
    except OSError as e:  # connection refused, name not resolved, time-out
        raise UserError(
            f"--push_to_hub={repo_id}: cannot reach the Hub at {api.endpoint} "
            f"({type(e).__name__}); check the network, or HF_ENDPOINT"
        ) from None
    return commit.commit_url


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
