"""ModernBERT (transformers' `ModernBertModel`, `ModernBertForMaskedLM` and the task classes
in TASK_CLASSES) as our encoder with its modern options and ModernBERT's task heads
(`config.prediction_head`, bert/heads.py): the config fields and the parameter names of both,
both ways.

ModernBERT fuses the query, key and value projections into one `Wqkv` and the MLP's two input
projections into one `Wi` (the activation's input, then the gate); ours keeps the three
attention projections apart and takes `Wi` as one `intermediate` kernel. Layer 0 has no
attention norm (the embeddings' norm precedes it), and the MLM decoder is tied to the token
embeddings. A task class's `head` (dense and norm) is our `head` (`transform`,
`transform_norm`), its `classifier` our `classifier`, or `qa_outputs` for question answering.
"""

import pathlib
from typing import Any

import numpy as np

from bert.convert.formats import CheckpointError
from bert.convert.name_table import CLASSIFIER, QA_OUTPUTS, check_config_value
from bert.layer_stack import as_unrolled
from bert.model import BertConfig

MODEL_TYPE = "modernbert"
# transformers' ModernBERT task classes that ours has, with our head's parameter group (the
# prediction head before it is group PREDICTION_HEAD).
TASK_CLASSES = {
    "ModernBertForSequenceClassification": CLASSIFIER,
    "ModernBertForTokenClassification": CLASSIFIER,
    "ModernBertForQuestionAnswering": QA_OUTPUTS,
}
PREDICTION_HEAD = "head"


def config_from_hf(fields: dict[str, Any], path: pathlib.Path) -> BertConfig:
    """Our config from a ModernBERT `config.json` (read from `path`).

    Raises:
      CheckpointError: a required field missing, a value ours cannot express, or one out of
        range, naming the file and field.
    """
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size"):  # fmt: skip
        if field not in fields:
            raise CheckpointError(f"{path}: required field {field!r} is missing")
    activation = fields.get("hidden_activation", "gelu")
    head_activation = fields.get("classifier_activation", "gelu")
    if head_activation != activation:
        raise CheckpointError(
            f"{path}: classifier_activation {head_activation!r} differs from hidden_activation "
            f"{activation!r}; the MLM head uses the encoder's activation"
        )
    head = {"classifier_pooling": fields.get("classifier_pooling", "cls"),
            "classifier_dropout": fields.get("classifier_dropout", 0.0)}  # fmt: skip
    for name, value in head.items():
        check_config_value(name, value, path, name)
    global_theta = fields.get("global_rope_theta", 160000.0)
    local_theta = fields.get("local_rope_theta")
    try:
        return BertConfig(
            vocab_size=fields["vocab_size"],
            hidden_size=fields["hidden_size"],
            num_layers=fields["num_hidden_layers"],
            num_heads=fields["num_attention_heads"],
            intermediate_size=fields["intermediate_size"],
            max_position_embeddings=fields.get("max_position_embeddings", 8192),
            type_vocab_size=0,
            hidden_act=activation,
            hidden_dropout=fields.get("mlp_dropout", 0.0),
            attention_dropout=fields.get("attention_dropout", 0.0),
            layer_norm_eps=fields.get("norm_eps", 1e-5),
            initializer_range=fields.get("initializer_range", 0.02),
            initializer="normal",
            position_embedding="rope",
            rope_theta=float(global_theta),
            local_rope_theta=float(global_theta if local_theta is None else local_theta),
            pre_norm=True,
            norm_bias=fields.get("norm_bias", False),
            gated_mlp=True,
            attention_bias=fields.get("attention_bias", False),
            mlp_bias=fields.get("mlp_bias", False),
            head_bias=fields.get("classifier_bias", False),
            decoder_bias=fields.get("decoder_bias", True),
            local_window=fields.get("local_attention", 128),
            global_every=fields.get("global_attn_every_n_layers", 3),
            prediction_head=True,
            **head,
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None


# The tokenizer's ids a ModernBERT config.json records (the tokenizer's business, not the
# encoder's: carried over from the source directory on export).
TOKEN_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")


def config_to_hf(
    config: BertConfig,
    architecture: str = "ModernBertForMaskedLM",
    token_ids: dict[str, Any] | None = None,
) -> dict:
    """A ModernBERT `config.json` dict for `config` (one made by `config_from_hf`), with the
    tokenizer's `token_ids` (TOKEN_ID_FIELDS; without them no padding id is set)."""
    ids = {name: (token_ids or {}).get(name) for name in TOKEN_ID_FIELDS}
    return {
        **ids,
        "architectures": [architecture],
        "model_type": MODEL_TYPE,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings,
        "hidden_activation": config.hidden_act,
        "classifier_activation": config.hidden_act,
        "mlp_dropout": config.hidden_dropout,
        "attention_dropout": config.attention_dropout,
        "norm_eps": config.layer_norm_eps,
        "initializer_range": config.initializer_range,
        "global_rope_theta": config.rope_theta,
        "local_rope_theta": config.local_rope_theta,
        "norm_bias": config.norm_bias,
        "attention_bias": config.attention_bias,
        "mlp_bias": config.mlp_bias,
        "classifier_bias": config.head_bias,
        "decoder_bias": config.decoder_bias,
        "local_attention": config.local_window,
        "global_attn_every_n_layers": config.global_every,
        "classifier_pooling": config.classifier_pooling,
        "classifier_dropout": config.classifier_dropout,
        "torch_dtype": "float32",
    }


# A task class's config.json fields about its labels, carried over from a source directory.
LABEL_FIELDS = ("id2label", "label2id", "problem_type", "finetuning_task")


def label_fields(source: dict[str, Any], labels: int) -> dict[str, Any]:
    """A task class's label fields: the source config.json's (LABEL_FIELDS) when its id2label
    names `labels` classes, else transformers' default names LABEL_0, LABEL_1, ..."""
    names = source.get("id2label")
    if isinstance(names, dict) and len(names) == labels:
        return {name: source[name] for name in LABEL_FIELDS if name in source}
    made_up = [f"LABEL_{i}" for i in range(labels)]
    return {"id2label": {str(i): name for i, name in enumerate(made_up)},
            "label2id": {name: i for i, name in enumerate(made_up)}}  # fmt: skip


def _linear(tensors, name: str, bias: bool) -> dict[str, np.ndarray]:
    out = {"kernel": np.asarray(tensors.pop(f"{name}.weight")).T}
    if bias:
        out["bias"] = np.asarray(tensors.pop(f"{name}.bias"))
    return out


def _norm(tensors, name: str, bias: bool) -> dict[str, np.ndarray]:
    out = {"scale": np.asarray(tensors.pop(f"{name}.weight"))}
    if bias:
        out["bias"] = np.asarray(tensors.pop(f"{name}.bias"))
    return out


def _layer(tensors, prefix: str, config: BertConfig, index: int) -> dict[str, Any]:
    c = config
    layer: dict[str, Any] = {}
    if index > 0:
        layer["attention_norm"] = _norm(tensors, f"{prefix}.attn_norm", c.norm_bias)
    qkv = _linear(tensors, f"{prefix}.attn.Wqkv", c.attention_bias)
    layer["attention"] = {
        name: {key: np.split(value, 3, axis=-1)[i] for key, value in qkv.items()}
        for i, name in enumerate(("query", "key", "value"))
    }
    layer["attention_output"] = _linear(tensors, f"{prefix}.attn.Wo", c.attention_bias)
    layer["output_norm"] = _norm(tensors, f"{prefix}.mlp_norm", c.norm_bias)
    layer["intermediate"] = _linear(tensors, f"{prefix}.mlp.Wi", c.mlp_bias)
    layer["output"] = _linear(tensors, f"{prefix}.mlp.Wo", c.mlp_bias)
    return layer


def params_from_hf(
    tensors: dict[str, Any], config: BertConfig, task_head: str | None = None
) -> dict[str, Any]:
    """Our parameters ({"bert": ..., "mlm": ...} with the MLM head) from a ModernBERT state
    dict, with or without the `model.` prefix of ModernBertForMaskedLM; with `task_head` (a
    group of TASK_CLASSES) a task class's: {"bert", "head", task_head}.

    Raises:
      CheckpointError: a tensor missing, or tensors left over that the table does not know.
    """
    left = dict(tensors)
    prefix = "model." if any(k.startswith("model.") for k in left) else ""
    try:
        encoder: dict[str, Any] = {
            "embeddings": {
                "word_embeddings": np.asarray(
                    left.pop(f"{prefix}embeddings.tok_embeddings.weight")
                ),
                "layer_norm": _norm(left, f"{prefix}embeddings.norm", config.norm_bias),
            },
            "final_norm": _norm(left, f"{prefix}final_norm", config.norm_bias),
        }
        for i in range(config.num_layers):
            encoder[f"layer_{i}"] = _layer(left, f"{prefix}layers.{i}", config, i)
        params: dict[str, Any] = {"bert": encoder}
        if task_head is not None:
            params[PREDICTION_HEAD] = _prediction_head(left, config)
            params[task_head] = _linear(left, "classifier", True)
        elif "head.dense.weight" in left:
            left.pop("decoder.weight", None)  # tied to the token embeddings
            mlm = {"transform": _linear(left, "head.dense", config.head_bias),
                   "transform_norm": _norm(left, "head.norm", config.norm_bias)}  # fmt: skip
            if config.decoder_bias:
                mlm["output_bias"] = np.asarray(left.pop("decoder.bias"))
            params["mlm"] = mlm
    except KeyError as e:
        raise CheckpointError(f"ModernBERT tensor {e.args[0]!r} is missing") from None
    if left:
        raise CheckpointError(f"unknown ModernBERT tensors: {', '.join(sorted(left)[:10])}")
    return params


def _prediction_head(tensors, config: BertConfig) -> dict[str, Any]:
    """ModernBertPredictionHead's dense and norm (`head.`) as our transform."""
    return {"transform": _linear(tensors, "head.dense", config.head_bias),
            "transform_norm": _norm(tensors, "head.norm", config.norm_bias)}  # fmt: skip


def params_to_hf(params: dict[str, Any], config: BertConfig) -> dict[str, np.ndarray]:
    """A ModernBertForMaskedLM state dict (ModernBertModel's names under `model.`, and the
    head's when `params` has one), or a task class's state dict when `params` holds a task head
    (`head` and `classifier` or `qa_outputs`), from our parameters: `params_from_hf` reversed."""
    params, config = as_unrolled(params, config)  # layer by layer, as ModernBERT names them
    out: dict[str, np.ndarray] = {}

    def linear(name: str, tree: dict) -> None:
        out[f"{name}.weight"] = np.ascontiguousarray(np.asarray(tree["kernel"]).T)
        if "bias" in tree:
            out[f"{name}.bias"] = np.asarray(tree["bias"])

    def norm(name: str, tree: dict) -> None:
        out[f"{name}.weight"] = np.asarray(tree["scale"])
        if "bias" in tree:
            out[f"{name}.bias"] = np.asarray(tree["bias"])

    encoder = params["bert"]
    out["model.embeddings.tok_embeddings.weight"] = np.asarray(
        encoder["embeddings"]["word_embeddings"]
    )
    norm("model.embeddings.norm", encoder["embeddings"]["layer_norm"])
    for i in range(config.num_layers):
        layer, prefix = encoder[f"layer_{i}"], f"model.layers.{i}"
        if i > 0:
            norm(f"{prefix}.attn_norm", layer["attention_norm"])
        attention = layer["attention"]
        fused = {key: np.concatenate([np.asarray(attention[n][key]) for n in
                                      ("query", "key", "value")], axis=-1)
                 for key in attention["query"]}  # fmt: skip
        linear(f"{prefix}.attn.Wqkv", fused)
        linear(f"{prefix}.attn.Wo", layer["attention_output"])
        norm(f"{prefix}.mlp_norm", layer["output_norm"])
        linear(f"{prefix}.mlp.Wi", layer["intermediate"])
        linear(f"{prefix}.mlp.Wo", layer["output"])
    norm("model.final_norm", encoder["final_norm"])
    task_head = params.get(PREDICTION_HEAD)
    if task_head is not None:
        linear("head.dense", task_head["transform"])
        norm("head.norm", task_head["transform_norm"])
        groups = [g for g in (CLASSIFIER, QA_OUTPUTS) if g in params]
        if len(groups) != 1:
            raise CheckpointError(f"a ModernBERT task head needs one of {CLASSIFIER}, {QA_OUTPUTS}")
        linear("classifier", params[groups[0]])
    elif "mlm" in params:
        linear("head.dense", params["mlm"]["transform"])
        norm("head.norm", params["mlm"]["transform_norm"])
        out["decoder.weight"] = out["model.embeddings.tok_embeddings.weight"]
        if "output_bias" in params["mlm"]:
            out["decoder.bias"] = np.asarray(params["mlm"]["output_bias"])
    return out


def state_dict(params: dict[str, Any], config: BertConfig, architecture: str) -> dict:
    """`params_to_hf` as `save_pretrained` writes `architecture`: without the tied decoder
    weight (safetensors keeps one copy), and ModernBertModel's without the `model.` prefix."""
    state = params_to_hf(params, config)
    state.pop("decoder.weight", None)
    if architecture == "ModernBertModel":
        state = {k.removeprefix("model."): v for k, v in state.items()}
    return state
