"""Sentence embeddings from any BERT checkpoint: batched, jitted encoding with mean or [CLS]
pooling and optional L2 normalisation."""

import dataclasses
import functools
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert import checkpoint as ckpt
from bert import convert
from bert.model import BertConfig, BertModel
from input_pipeline import manifest, tokenizers

POOLINGS = ("mean", "cls")


@dataclasses.dataclass(frozen=True)
class Encoder:
    """A loaded encoder: config, parameters and the tokenizer found beside the checkpoint."""

    config: BertConfig
    params: dict
    tokenizer: tokenizers.Tokenizer


def load_encoder(checkpoint_path: str, tokenizer_path: str | None = None) -> Encoder:
    """The encoder of a checkpoint and its tokenizer.

    Args:
      checkpoint_path: an HF directory, a Google TF checkpoint, one exported by bert.convert,
        or a training workdir of ours (pre-training or fine-tuning: its latest checkpoint).
      tokenizer_path: a tokenizer file or folder; default the one beside the checkpoint (for a
        workdir: the one it was trained with).
    """
    if ckpt.is_training_workdir(checkpoint_path):
        params, meta = ckpt.load_params(checkpoint_path)
        if "model" not in meta or "bert" not in params:
            raise ValueError(f"{checkpoint_path}: the checkpoint holds no BERT encoder")
        config = BertConfig.from_dict(meta["model"])
        default_tokenizer = _workdir_tokenizer(checkpoint_path, meta)
    else:
        imported = convert.import_model(checkpoint_path)
        config, params, default_tokenizer = imported.config, imported.params, imported.source
    tokenizer = tokenizers.load_tokenizer(tokenizer_path or default_tokenizer)
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} tokens but the model in "
            f"{checkpoint_path} has {config.vocab_size}"
        )
    return Encoder(config, params["bert"], tokenizer)


def _workdir_tokenizer(workdir: str, meta: dict) -> str:
    """The tokenizer a training workdir used: its prepared data's, or the one its checkpoint
    metadata names (fine-tuning)."""
    data = pathlib.Path(workdir) / "data"
    if manifest.manifest_path(data).is_file():
        return str(manifest.load_manifest(data).tokenizer_path)
    if meta.get("tokenizer"):
        return meta["tokenizer"]
    raise FileNotFoundError(
        f"{workdir}: no prepared data in {data} and no tokenizer named in the checkpoint; "
        "give the tokenizer in the config"
    )


@functools.partial(jax.jit, static_argnames=("config", "pooling", "normalize"))
def _embed(params, ids, segments, mask, *, config: BertConfig, pooling: str, normalize: bool):
    hidden, _ = BertModel(config).apply({"params": params}, ids, segments, mask)
    hidden = hidden.astype(jnp.float32)  # [batch, length, embed]
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        weights = mask[..., None].astype(jnp.float32)
        pooled = jnp.sum(hidden * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
    if normalize:
        pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled  # [batch, embed]


def embed(
    encoder: Encoder,
    sentences: Sequence[str],
    max_length: int = 256,
    batch_size: int = 64,
    pooling: str = "mean",
    normalize: bool = True,
) -> np.ndarray:
    """Embeddings [len(sentences), embed] as float32.

    Sentences are tokenized as [CLS] text [SEP], truncated to `max_length`, sorted by length and
    padded per batch to a multiple of 16 (few compiled shapes, little padding).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    tok = encoder.tokenizer
    encoded = []
    for ids in tok.encode_batch_ids(list(sentences)):
        ids, _ = tok.build_inputs(ids[: max_length - 2])
        encoded.append(ids)
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    out = np.zeros((len(encoded), encoder.config.hidden_size), np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        length = -(-max(len(encoded[i]) for i in chunk) // 16) * 16
        ids = np.full((batch_size, length), tok.pad_id, np.int32)
        mask = np.zeros((batch_size, length), np.int32)
        for row, i in enumerate(chunk):
            ids[row, : len(encoded[i])] = encoded[i]
            mask[row, : len(encoded[i])] = 1
        vectors = _embed(
            encoder.params, ids, np.zeros_like(ids), mask,
            config=encoder.config, pooling=pooling, normalize=normalize,
        )  # fmt: skip
        out[chunk] = np.asarray(vectors)[: len(chunk)]
    return out
