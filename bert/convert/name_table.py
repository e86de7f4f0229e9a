"""The one name table: every parameter of ours with its Hugging Face (PyTorch) name and its
Google TF variable name, and the config field names of both formats."""

import dataclasses
import math
import pathlib
from typing import Any

from bert.convert.formats import CheckpointError
from bert.heads import CLASSIFIER_POOLINGS
from bert.model import BertConfig

# Parameter groups. The encoder is required; the others are optional heads that some
# checkpoints lack (a sentence-embedding model has no MLM/NSP head; some have no pooler).
ENCODER, POOLER, MLM, NSP = "encoder", "pooler", "mlm", "nsp"
OPTIONAL_GROUPS = (POOLER, MLM, NSP)

# HF tensors that are not parameters of their own: buffers and tied copies.
HF_IGNORED = ("bert.embeddings.position_ids",)
HF_TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
# TF variables that belong to training, not to the model.
TF_TRAINING_NAMES = ("global_step", "good_steps", "current_loss_scale", "loss_scale")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One parameter: our path, its HF and TF names, and whether each stores it transposed."""

    ours: tuple[str, ...]
    hf: str
    tf: str
    group: str
    hf_transposed: bool = False  # torch.nn.Linear keeps [out, in]; ours is [in, out]
    tf_transposed: bool = False


def _dense(ours: tuple[str, ...], hf: str, tf: str, group: str, tf_kernel: str = "kernel"):
    """Entries of a dense layer; `tf_kernel` names the kernel where TF differs."""
    return [
        Entry((*ours, "kernel"), f"{hf}.weight", f"{tf}/{tf_kernel}", group, hf_transposed=True),
        Entry((*ours, "bias"), f"{hf}.bias", f"{tf}/bias", group),
    ]


def _norm(ours: tuple[str, ...], hf: str, tf: str, group: str):
    return [
        Entry((*ours, "scale"), f"{hf}.weight", f"{tf}/gamma", group),
        Entry((*ours, "bias"), f"{hf}.bias", f"{tf}/beta", group),
    ]


def name_table(num_layers: int) -> list[Entry]:
    """The full table for a BertForPreTraining with `num_layers` layers."""
    emb, hemb, temb = ("bert", "embeddings"), "bert.embeddings", "bert/embeddings"
    table = [
        Entry((*emb, "word_embeddings"), f"{hemb}.word_embeddings.weight",
              f"{temb}/word_embeddings", ENCODER),
        Entry((*emb, "position_embeddings"), f"{hemb}.position_embeddings.weight",
              f"{temb}/position_embeddings", ENCODER),
        Entry((*emb, "token_type_embeddings"), f"{hemb}.token_type_embeddings.weight",
              f"{temb}/token_type_embeddings", ENCODER),
        *_norm((*emb, "layer_norm"), f"{hemb}.LayerNorm", f"{temb}/LayerNorm", ENCODER),
    ]  # fmt: skip
    for i in range(num_layers):
        ours, hf, tf = ("bert", f"layer_{i}"), f"bert.encoder.layer.{i}", f"bert/encoder/layer_{i}"
        for proj in ("query", "key", "value"):
            table += _dense(
                (*ours, "attention", proj),
                f"{hf}.attention.self.{proj}",
                f"{tf}/attention/self/{proj}",
                ENCODER,
            )
        table += _dense(
            (*ours, "attention_output"),
            f"{hf}.attention.output.dense",
            f"{tf}/attention/output/dense",
            ENCODER,
        )
        table += _norm(
            (*ours, "attention_norm"),
            f"{hf}.attention.output.LayerNorm",
            f"{tf}/attention/output/LayerNorm",
            ENCODER,
        )
        table += _dense(
            (*ours, "intermediate"), f"{hf}.intermediate.dense", f"{tf}/intermediate/dense", ENCODER
        )
        table += _dense((*ours, "output"), f"{hf}.output.dense", f"{tf}/output/dense", ENCODER)
        table += _norm(
            (*ours, "output_norm"), f"{hf}.output.LayerNorm", f"{tf}/output/LayerNorm", ENCODER
        )
    table += _dense(("bert", "pooler"), "bert.pooler.dense", "bert/pooler/dense", POOLER)
    table += _dense(
        ("mlm", "transform"), "cls.predictions.transform.dense",
        "cls/predictions/transform/dense", MLM,
    )  # fmt: skip
    table += _norm(
        ("mlm", "transform_norm"), "cls.predictions.transform.LayerNorm",
        "cls/predictions/transform/LayerNorm", MLM,
    )  # fmt: skip
    table += [
        Entry(("mlm", "output_bias"), "cls.predictions.bias", "cls/predictions/output_bias", MLM),
        Entry(("nsp", "kernel"), "cls.seq_relationship.weight",
              "cls/seq_relationship/output_weights", NSP, hf_transposed=True, tf_transposed=True),
        Entry(("nsp", "bias"), "cls.seq_relationship.bias", "cls/seq_relationship/output_bias",
              NSP),
    ]  # fmt: skip
    return table


# Fine-tuned task heads (bert/heads.py), named as HF's task classes and Google's fine-tuning
# scripts (run_classifier.py, run_squad.py) name them.
CLASSIFIER, QA_OUTPUTS = "classifier", "qa_outputs"
_HEAD_NAMES = {
    CLASSIFIER: ("classifier", "output"),  # sequence and token classification
    QA_OUTPUTS: ("qa_outputs", "cls/squad/output"),
}


def head_table(head: str) -> list[Entry]:
    """The entries of a fine-tuned head: CLASSIFIER or QA_OUTPUTS (its kernel [embed, classes])."""
    hf, tf = _HEAD_NAMES[head]
    return [
        Entry((head, "kernel"), f"{hf}.weight", f"{tf}_weights", head, True, True),
        Entry((head, "bias"), f"{hf}.bias", f"{tf}_bias", head),
    ]


# ----------------------------------------------------------------------------- configs


# (our field, HF/Google field, required)
_CONFIG_FIELDS = (
    ("vocab_size", "vocab_size", True),
    ("hidden_size", "hidden_size", True),
    ("num_layers", "num_hidden_layers", True),
    ("num_heads", "num_attention_heads", True),
    ("intermediate_size", "intermediate_size", True),
    ("max_position_embeddings", "max_position_embeddings", False),
    ("type_vocab_size", "type_vocab_size", False),
    ("hidden_act", "hidden_act", False),
    ("hidden_dropout", "hidden_dropout_prob", False),
    ("attention_dropout", "attention_probs_dropout_prob", False),
    ("layer_norm_eps", "layer_norm_eps", False),
    ("initializer_range", "initializer_range", False),
)


# What a config value must be, by our field: (test, what the error says it must be).
_POSITIVE_INT = (lambda v: type(v) is int and v > 0, "a positive integer")
_PROBABILITY = (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
_POSITIVE = (lambda v: _is_number(v) and v > 0, "a positive number")
_CONFIG_VALUES = {
    **dict.fromkeys(("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings"), _POSITIVE_INT),
    # 0: no token types (ModernBERT)
    "type_vocab_size": (lambda v: type(v) is int and v >= 0, "a non-negative integer"),
    "hidden_dropout": _PROBABILITY,
    "attention_dropout": _PROBABILITY,
    "layer_norm_eps": _POSITIVE,
    "initializer_range": _POSITIVE,
    **dict.fromkeys(("hidden_act", "dtype", "param_dtype", "attention_impl", "initializer"),
                    (lambda v: isinstance(v, str), "a string")),
    "prediction_head": (lambda v: type(v) is bool, "true or false"),
    "classifier_pooling": (lambda v: isinstance(v, str) and v in CLASSIFIER_POOLINGS,
                           " or ".join(repr(p) for p in CLASSIFIER_POOLINGS)),
    "classifier_dropout": _PROBABILITY,
}  # fmt: skip


def check_config_value(ours: str, value: Any, path: pathlib.Path, name: str) -> None:
    """Raises CheckpointError naming `path` and the field `name` when a config value (our field
    `ours`) is of the wrong type or range; BertConfig checks the rest (an unknown activation)."""
    valid, must_be = _CONFIG_VALUES.get(ours, (lambda v: True, ""))
    if not valid(value):
        raise CheckpointError(f"{path}: {name} must be {must_be}, got {repr(value)[:80]}")


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def config_from_hf(fields: dict[str, Any], path: pathlib.Path) -> BertConfig:
    """Our config from an HF `config.json` or a Google `bert_config.json` (read from `path`).

    Raises:
      CheckpointError: not BERT, a required field missing, or a value of the wrong type or
        range (a count that is not a positive integer, a dropout outside [0, 1), ...).
    """
    model_type = fields.get("model_type", "bert")
    if model_type != "bert":
        raise CheckpointError(f"{path}: model_type {model_type!r} is not BERT ('bert')")
    position_type = fields.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise CheckpointError(
            f"{path}: position_embedding_type {position_type!r} is not supported (only absolute)"
        )
    values = {}
    for ours, theirs, required in _CONFIG_FIELDS:
        if theirs in fields:
            values[ours] = fields[theirs]
            check_config_value(ours, values[ours], path, theirs)
        elif required:
            raise CheckpointError(f"{path}: required field {theirs!r} is missing")
    try:
        return BertConfig(**values)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def config_to_hf(config: BertConfig, architecture: str) -> dict[str, Any]:
    """An HF `config.json` dict for `config`."""
    fields = {"architectures": [architecture], "model_type": "bert"}
    for ours, theirs, _ in _CONFIG_FIELDS:
        fields[theirs] = getattr(config, ours)
    fields.update(pad_token_id=0, position_embedding_type="absolute", torch_dtype="float32")
    return fields
