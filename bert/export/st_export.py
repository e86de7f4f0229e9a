"""Any checkpoint bert/pretrained.py loads (a training workdir of ours, an HF, Google TF or
sentence-transformers directory, a Hub model id) as a sentence-transformers directory: the
encoder as an HF BertModel (a ModernBERT encoder, with rotary positions: a ModernBertModel,
whose inputs have no token_type_ids) with its tokenizer, then the Pooling and optional
Normalize modules (bert/convert/st_modules.py), written atomically.

Pooling, normalisation and the longest input come from the arguments when given, else from
what the source records (a sentence-transformers directory's modules, a workdir's checkpoint
`pooling` / `normalize` / `max_seq_length`), else mean pooling, no normalisation and the
model's position count (as sentence-transformers builds a model from a plain HF checkpoint).
"""

import dataclasses
import json
import pathlib

from bert import pretrained
from bert.convert import formats, hf_tokenizer, modernbert_table, st_modules
from bert.convert.name_table import config_to_hf
from bert.convert.params import groups_of, params_to_hf
from bert.export import workdirs
from bert.heads import POOLINGS
from util import errors


@dataclasses.dataclass(frozen=True)
class ExportedSentenceModel:
    """What `export_sentence_transformers` wrote, and where each setting came from."""

    pooling: str
    normalize: bool
    max_seq_length: int
    origin: str  # per setting, "flags", "the source" or "default": "pooling from flags, ..."
    files: tuple[str, ...]


def _settings(
    loaded: pretrained.Pretrained, pooling: str, normalize: bool | None, max_seq_length: int
) -> tuple[str, bool, int, str]:
    """(pooling, normalize, max_seq_length, where each came from)."""
    chosen, origins = {}, []
    fallback = {"pooling": "mean", "normalize": False,
                "max_seq_length": loaded.config.max_position_embeddings}  # fmt: skip
    recorded = {"pooling": loaded.pooling, "normalize": loaded.normalize,
                "max_seq_length": loaded.max_seq_length}  # fmt: skip
    given = {"pooling": pooling or None, "normalize": normalize,
             "max_seq_length": max_seq_length or None}  # fmt: skip
    for name in fallback:
        for origin, values in (("flags", given), ("the source", recorded), ("default", fallback)):
            if values[name] not in (None, ""):
                chosen[name] = values[name]
                origins.append(f"{name} from {origin}")
                break
    return chosen["pooling"], chosen["normalize"], chosen["max_seq_length"], ", ".join(origins)


def export_sentence_transformers(
    source: str,
    destination: str | pathlib.Path,
    *,
    pooling: str = "",
    normalize: bool | None = None,
    max_seq_length: int = 0,
    step: int | None = None,
    overwrite: bool = False,
) -> ExportedSentenceModel:
    """Writes `source` as a sentence-transformers directory at `destination`.

    Args:
      source: anything pretrained.load takes (workdir, checkpoint directory, Hub model id).
      pooling: one of bert.heads.POOLINGS; empty: the source's, else mean.
      normalize: L2-normalise (a Normalize module); None: the source's, else False.
      max_seq_length: tokens per input, [CLS] and [SEP] included; 0: the source's, else the
        model's max_position_embeddings.
      step: for a workdir, the checkpoint step; None: the newest.

    Raises:
      UserError: an unknown pooling, a length beyond the model's positions, an unreadable source.
    """
    from safetensors.numpy import save_file

    if pooling and pooling not in POOLINGS:
        raise errors.UserError(f"--pooling={pooling}: not one of {', '.join(POOLINGS)}")
    try:
        loaded = pretrained.load(source, step=step)
    except errors.UserError:
        raise
    except (FileNotFoundError, ValueError) as e:  # the recorded tokenizer is gone or unfit
        raise formats.CheckpointError(f"{source}: {e}") from None
    pooling, normalize, length, origin = _settings(loaded, pooling, normalize, max_seq_length)
    if not 2 <= length <= loaded.config.max_position_embeddings:
        raise errors.UserError(
            f"--max_seq_length={length}: must lie in 2..{loaded.config.max_position_embeddings} "
            "(the model's positions)"
        )
    encoder = {"bert": loaded.params["bert"]}  # the encoder (and pooler), without any head
    if loaded.config.position_embedding == "rope":  # a ModernBERT encoder
        architecture, types = "ModernBertModel", {"token_types": False}
        state = modernbert_table.state_dict(encoder, loaded.config, architecture)
        hf_config = workdirs.modern_config(loaded, architecture)
    else:
        architecture, types = "BertModel", {}
        groups_of(encoder, loaded.config)  # names and shapes checked against the config
        named = params_to_hf(encoder, loaded.config)
        state = {k.removeprefix("bert."): v for k, v in named.items()}
        hf_config = config_to_hf(loaded.config, architecture)
    with formats.atomic_directory(pathlib.Path(destination), overwrite) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        written = hf_tokenizer.write_tokenizer(loaded.tokenizer, tmp, length, **types)
        modules = st_modules.write(
            tmp, pooling=pooling, normalize=normalize, dimension=loaded.config.hidden_size,
            max_seq_length=length,
        )  # fmt: skip
    files = ("config.json", "model.safetensors", *written, *modules)
    return ExportedSentenceModel(pooling, normalize, length, origin, files)
