"""ELECTRA's parameters (bert/heads.py `Electra`) as transformers' two classes: the discriminator
as ElectraForPreTraining, the generator as ElectraForMaskedLM, each with the shared embeddings
(word, position and token-type tables and their LayerNorm) under its own `electra.embeddings`,
and their config.json. The encoders' names are BERT's (the one name table) under `electra.`
instead of `bert.`, no pooler, and an `embeddings_project` where the embeddings' width differs
from the encoder's."""

import dataclasses
from typing import Any

import jax
import numpy as np

from bert.convert.formats import CheckpointError
from bert.convert.name_table import config_to_hf
from bert.convert.params import params_to_hf
from bert.heads import generator_config
from bert.model import STACKED_LAYERS, BertConfig

DISCRIMINATOR, GENERATOR = "ElectraForPreTraining", "ElectraForMaskedLM"
# our parameter groups beside the discriminator's encoder ("bert")
GROUPS = ("discriminator", "generator", "generator_mlm")
# BertConfig fields transformers' Electra classes have only at these values (BERT's encoder)
_BERT_ENCODER = ("position_embedding", "pre_norm", "embedding_norm", "norm_bias", "gated_mlp",
                 "attention_bias", "mlp_bias", "head_bias", "decoder_bias", "local_window",
                 "prediction_head")  # fmt: skip


def is_electra(params: dict[str, Any]) -> bool:
    """Whether `params` are an ELECTRA model's (generator and discriminator)."""
    return all(group in params for group in GROUPS)


def generator_config_of(params: dict[str, Any], config: BertConfig) -> BertConfig:
    """The generator's config of ELECTRA `params` beside a discriminator of `config`: its widths
    read off its parameters, its heads by bert/heads.py's rule."""
    hidden = int(np.shape(params["generator_mlm"]["transform"]["kernel"])[0])
    layers = params["generator"]
    layer = layers["layer_0"] if "layer_0" in layers else layers[STACKED_LAYERS]
    intermediate = int(np.shape(layer["intermediate"]["kernel"])[-1])
    derived = generator_config(config, hidden / config.hidden_size)
    return dataclasses.replace(derived, hidden_size=hidden, intermediate_size=intermediate)


def check(config: BertConfig, generator: BertConfig, where: str) -> None:
    """Raises CheckpointError unless transformers' Electra classes compute these encoders."""
    defaults = BertConfig(vocab_size=1)
    odd = [f for f in _BERT_ENCODER if getattr(config, f) != getattr(defaults, f)]
    if odd or not config.type_vocab_size:
        odd += [] if config.type_vocab_size else ["type_vocab_size 0"]
        raise CheckpointError(
            f"{where}: transformers' Electra classes have BERT's encoder; this one sets "
            f"{', '.join(odd)}"
        )
    if generator.hidden_act != "gelu":  # transformers' ElectraGeneratorPredictions: always gelu
        raise CheckpointError(
            f"{where}: hidden_act {generator.hidden_act!r}, but transformers' ElectraForMaskedLM "
            "applies gelu in its MLM head"
        )


def _array(value: Any, transposed: bool = False) -> np.ndarray:
    array = np.asarray(jax.device_get(value), dtype=np.float32)
    return np.ascontiguousarray(array.T if transposed else array)


def _dense(params: dict[str, Any], name: str) -> dict[str, np.ndarray]:
    return {
        f"{name}.weight": _array(params["kernel"], True),
        f"{name}.bias": _array(params["bias"]),
    }


def _encoder(encoder: dict[str, Any], embeddings: dict[str, Any], config: BertConfig) -> dict:
    """`electra.*` tensors of an encoder's layers (and projection) reading `embeddings`."""
    state = params_to_hf({"bert": {**encoder, "embeddings": embeddings}}, config)
    state = {"electra" + k.removeprefix("bert"): v for k, v in state.items()
             if not k.startswith("bert.pooler.")}  # fmt: skip
    if "embeddings_project" in encoder:
        state.update(_dense(encoder["embeddings_project"], "electra.embeddings_project"))
    return state


def discriminator_state(params: dict[str, Any], config: BertConfig) -> dict[str, np.ndarray]:
    """ElectraForPreTraining's state dict of ELECTRA `params` (any layout of `config`)."""
    state = _encoder(params["bert"], params["bert"]["embeddings"], config)
    head = params["discriminator"]
    state.update(_dense(head["dense"], "discriminator_predictions.dense"))
    state.update(_dense(head["dense_prediction"], "discriminator_predictions.dense_prediction"))
    return state


def generator_state(
    params: dict[str, Any], config: BertConfig, generator: BertConfig
) -> dict[str, np.ndarray]:
    """ElectraForMaskedLM's state dict of ELECTRA `params` (generator of config `generator`),
    its output layer left to the tie with the word table (as save_pretrained writes it)."""
    state = _encoder(params["generator"], params["bert"]["embeddings"], generator)
    head = params["generator_mlm"]
    state.update(_dense(head["transform"], "generator_predictions.dense"))
    norm = head["transform_norm"]
    state["generator_predictions.LayerNorm.weight"] = _array(norm["scale"])
    state["generator_predictions.LayerNorm.bias"] = _array(norm["bias"])
    state["generator_lm_head.bias"] = _array(head["output_bias"])
    return state


def hf_config(config: BertConfig, architecture: str, pad_token_id: int) -> dict[str, Any]:
    """An ElectraConfig's config.json for an encoder of `config` (the discriminator's or the
    generator's)."""
    fields = config_to_hf(config, architecture)
    fields.update(model_type="electra", embedding_size=config.embedding_width,
                  pad_token_id=pad_token_id)  # fmt: skip
    return fields
