"""The one loader of pretrained models: a workdir of ours (pre-trained or fine-tuned: its newest
checkpoint), any checkpoint directory bert/convert reads (Hugging Face, Google TF, our exported
format, a sentence-transformers directory) or a Hugging Face Hub model id (`org/name[@revision]`,
fetched once into the Hub cache by util/hub.py), with the tokenizer found beside it,
and the sentence-embedding settings the checkpoint records (pooling, normalisation)."""

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from bert import convert, layer_stack
from bert.convert import st_modules
from bert.model import BertConfig, BertModel
from bert.training import checkpoints
from input_pipeline import tokenizers
from util import errors, hub, paths

# The optional parameter groups of a checkpoint (bert/convert/name_table.py), as a line names them
HEAD_NAMES = {"pooler": "pooler", "mlm": "masked-LM head", "nsp": "next-sentence head"}


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A loaded checkpoint.

    Attributes:
      config: the encoder's config.
      params: our nested parameters: "bert" (the encoder) and whichever heads the checkpoint
        holds ("mlm", "nsp", a fine-tuned task's head, ...), in `config`'s layout (a workdir
        trained with model.scan_layers: the layers stacked; bert/layer_stack.relayout converts
        them for a model of another config).
      tokenizer: the tokenizer beside the checkpoint (or the one asked for); None when loaded
        without one.
      source: the path (or Hub model id) it was loaded from.
      task: for a workdir of ours, the task its checkpoint was trained for ("pretrain",
        "glue/sst2", "ner", "squad", ...); empty otherwise.
      step: for a workdir, the step of the checkpoint loaded.
      labels: for a workdir of a classification or tagging task, the label names its
        checkpoint records (class i is labels[i]); empty when none are recorded.
      pooling: the sentence-embedding pooling the checkpoint records (a sentence-transformers
        directory's Pooling module, a workdir's `pooling`); empty when it records none.
      normalize: whether its embeddings are L2-normalised (a Normalize module, a workdir's
        `normalize`); None when it does not say.
      max_seq_length: the longest input it records (sentence_bert_config.json, a workdir's
        `max_seq_length`); None when it records none.
    """

    config: BertConfig
    params: dict[str, Any]
    tokenizer: tokenizers.Tokenizer | None
    source: str
    task: str = ""
    step: int | None = None
    labels: tuple[str, ...] = ()
    pooling: str = ""
    normalize: bool | None = None
    max_seq_length: int | None = None

    @property
    def encoder(self) -> dict[str, Any]:
        """The encoder's parameters (BertModel's tree)."""
        return self.params["bert"]

    def with_config(self, config: BertConfig) -> "Pretrained":
        """This checkpoint for a model of `config` (its sizes; another layout, dtype, dropout,
        remat, ...): the parameters relaid out from this config's layout into `config`'s
        (bert/layer_stack.relayout: stacked for model.scan_layers, else unrolled).

        Raises:
          ValueError: the parameters do not fit `config`'s layers (e.g. fewer of them).
        """
        params = layer_stack.relayout(self.params, self.config, config)
        return dataclasses.replace(self, config=config, params=params)


def random_encoder(
    config: BertConfig, tokenizer: tokenizers.Tokenizer | None, seed: int
) -> Pretrained:
    """A randomly initialised encoder of `config` (BertModel's own initialisation from `seed`)
    with `tokenizer`: the baseline a pre-trained encoder is measured against."""
    ids = np.ones((1, 8), np.int32)
    params = BertModel(config).init(jax.random.key(seed), ids, ids * 0, ids)["params"]
    params = jax.device_get(nn.meta.unbox(params))
    return Pretrained(config, {"bert": params}, tokenizer, source="random", step=0)


def load(
    path: str,
    tokenizer: str = "",
    *,
    with_tokenizer: bool = True,
    step: int | None = None,
    fields: tuple[str, str] = ("init_from", "tokenizer"),
) -> Pretrained:
    """Loads a checkpoint and its tokenizer.

    Args:
      path: a training workdir of ours, an HF directory, a Google TF checkpoint directory, one
        exported by bert.convert, or a Hub model id `org/name[@revision]` (an existing local
        path of that shape wins).
      tokenizer: a tokenizer file or folder, or a Hub model id (its tokenizer files only);
        empty: the one beside the checkpoint (for a workdir: the one its checkpoints record).
      with_tokenizer: False to load the parameters alone (e.g. to continue pre-training).
      step: for a workdir, the checkpoint step to load; None: the newest.
      fields: the names of `path` and `tokenizer` in error messages (config fields or flags).

    Raises:
      UserError: a Hub id that cannot be fetched (no such model; offline and not cached); a
        checkpoint that holds no encoder; a tokenizer with more tokens than the model's
        vocab_size (a model vocabulary larger than the tokenizer's, padded, is fine).
      FileNotFoundError: no tokenizer can be found.
    """
    recorded: dict[str, Any] = {}
    sentence = None
    source = path
    path = hub.local_path(path, fields[0])
    tokenizer = hub.local_path(tokenizer, fields[1], tokenizer_only=True)
    if checkpoints.is_training_workdir(path):
        params, meta = checkpoints.load_params(path, step)
        if "model" not in meta or "bert" not in params:
            raise errors.UserError(f"{path}: the checkpoint holds no BERT encoder")
        config = BertConfig.from_dict(meta["model"])
        logging.info("loaded %s step %s", path, meta.get("step"))
        default_tokenizer = _recorded_tokenizer(path, meta)
        recorded = {"task": meta.get("task", "pretrain"), "step": meta.get("step"),
                    "labels": tuple(meta.get("labels", ())), "pooling": meta.get("pooling", ""),
                    "normalize": meta.get("normalize"),
                    "max_seq_length": meta.get("max_seq_length")}  # fmt: skip
    else:
        if step is not None:
            raise errors.UserError(f"{path}: a step applies only to a training workdir of ours")
        sentence = st_modules.read(path) if st_modules.is_sentence_transformers(path) else None
        imported = convert.import_model(sentence.model_dir if sentence else path)
        if sentence:
            recorded = _sentence_settings(sentence, imported.config, path)
        config, params, default_tokenizer = imported.config, imported.params, str(imported.source)
        if imported.missing_heads:
            missing = ", ".join(HEAD_NAMES.get(h, h) for h in imported.missing_heads)
            logging.info("%s has no %s (fine-tuning starts a missing pooler from random weights)",
                         path, missing)  # fmt: skip
    if not with_tokenizer:
        return Pretrained(config, params, None, source, **recorded)
    if not tokenizer:  # the recorded one: a path, or a Hub model id with its commit
        tokenizer = hub.local_path(default_tokenizer, f"{source}'s tokenizer", tokenizer_only=True)
    loaded = tokenizers.load_tokenizer(tokenizer)
    # A model may embed more ids than its tokenizer has (ModernBERT pads 50,280 pieces to 50,368
    # rows), never fewer: an id past the embedding matrix gives a silently wrong row.
    if loaded.vocab_size > config.vocab_size:
        raise errors.UserError(
            f"tokenizer {loaded.path} has {loaded.vocab_size} tokens but the model in {source} "
            f"embeds only {config.vocab_size} (its vocab_size): ids from {config.vocab_size} up "
            f"would index past its embedding matrix; give the tokenizer it was trained with "
            f"({fields[1]}=...)"
        )
    if sentence and sentence.do_lower_case and not _lower_cases(loaded):
        raise errors.UserError(
            f"{sentence.model_dir / st_modules.TRANSFORMER_CONFIG}: do_lower_case is true, "
            f"which this project does not apply, and the tokenizer {loaded.path} keeps case"
        )
    return Pretrained(config, params, loaded, source, **recorded)


def _recorded_tokenizer(workdir: str, meta: dict) -> str:
    """The tokenizer a workdir's checkpoints record (a relative path is inside the workdir;
    `org/name@commit`, a Hub model's tokenizer, is fetched when it is loaded)."""
    if not meta.get("tokenizer"):
        raise errors.UserError(
            f"{workdir}: its checkpoint names no tokenizer; give one in the config (tokenizer)"
        )
    recorded = meta["tokenizer"]
    if paths.is_remote(recorded) or os.path.isabs(recorded) or "@" in recorded:  # org/name@sha
        return recorded
    return str(paths.path(workdir) / recorded)


def _sentence_settings(sentence: st_modules.SentenceConfig, config: BertConfig, path: str) -> dict:
    """Pretrained's fields from a sentence-transformers directory (checked against the model)."""
    if sentence.dimension not in (None, config.hidden_size):
        raise errors.UserError(
            f"{path}: the Pooling module's dimension is {sentence.dimension} but the model's "
            f"hidden size is {config.hidden_size}"
        )
    return {"pooling": sentence.pooling, "normalize": sentence.normalize,
            "max_seq_length": sentence.max_seq_length}  # fmt: skip


def _lower_cases(tokenizer: tokenizers.Tokenizer) -> bool:
    """Whether the tokenizer gives upper- and lower-case text the same ids."""
    upper, lower = tokenizer.encode_batch_ids(["THE CAT SAT ON A MAT", "the cat sat on a mat"])
    return list(upper) == list(lower)
