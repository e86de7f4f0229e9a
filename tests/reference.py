"""The Hugging Face PyTorch reference, used by the parity and conversion tests."""

import json
import shutil

import numpy as np
import tensorflow as tf
import torch
import transformers

# Two deliberately odd configs: a vocabulary that is not a multiple of 8, three segment types,
# a head count that is not a power of two, and the tanh GELU.
CONFIGS = {
    "odd_vocab": dict(
        vocab_size=99,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=40,
        type_vocab_size=3,
        hidden_act="gelu",
    ),
    "three_heads": dict(
        vocab_size=256,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=3,
        intermediate_size=128,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu_new",
        layer_norm_eps=1e-7,
    ),
}


def hf_model(name: str, seed: int = 0) -> transformers.BertForPreTraining:
    """A BertForPreTraining whose every parameter is random (LayerNorm and biases included)."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(**CONFIGS[name])
    model = transformers.BertForPreTraining(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "LayerNorm.weight" in pname:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    return model


def batch(config: dict, seed: int = 0, lengths=(13, 7, 2)) -> dict[str, np.ndarray]:
    """Right-padded inputs of unequal lengths, with [CLS]-like first tokens and two segments."""
    rng = np.random.default_rng(seed)
    length = max(lengths)
    ids = rng.integers(1, config["vocab_size"], size=(len(lengths), length))
    mask = (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    segments = (np.arange(length)[None, :] >= np.asarray(lengths)[:, None] // 2).astype(np.int64)
    segments = segments * mask
    return {
        "input_ids": (ids * mask).astype(np.int64),
        "token_type_ids": segments,
        "attention_mask": mask,
    }


def hf_forward(model: transformers.BertForPreTraining, inputs: dict[str, np.ndarray]) -> dict:
    """Last hidden states, pooled output, MLM and NSP logits of the reference, as numpy."""
    with torch.no_grad():
        out = model(
            **{k: torch.from_numpy(v) for k, v in inputs.items()},
            output_hidden_states=True,
        )
        pooled = model.bert.pooler(out.hidden_states[-1])
    return {
        "sequence_output": out.hidden_states[-1].numpy(),
        "pooled_output": pooled.numpy(),
        "mlm_logits": out.prediction_logits.numpy(),
        "nsp_logits": out.seq_relationship_logits.numpy(),
    }


def google_variables(model: transformers.BertForPreTraining) -> dict[str, np.ndarray]:
    """The variables of Google's original TF BERT, with their original names, written out here
    independently of bert/convert/name_table.py."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = {
        "bert/embeddings/word_embeddings": sd["bert.embeddings.word_embeddings.weight"],
        "bert/embeddings/position_embeddings": sd["bert.embeddings.position_embeddings.weight"],
        "bert/embeddings/token_type_embeddings": sd["bert.embeddings.token_type_embeddings.weight"],
        "bert/embeddings/LayerNorm/gamma": sd["bert.embeddings.LayerNorm.weight"],
        "bert/embeddings/LayerNorm/beta": sd["bert.embeddings.LayerNorm.bias"],
        "bert/pooler/dense/kernel": sd["bert.pooler.dense.weight"].T,
        "bert/pooler/dense/bias": sd["bert.pooler.dense.bias"],
        "cls/predictions/transform/dense/kernel": sd["cls.predictions.transform.dense.weight"].T,
        "cls/predictions/transform/dense/bias": sd["cls.predictions.transform.dense.bias"],
        "cls/predictions/transform/LayerNorm/gamma": sd[
            "cls.predictions.transform.LayerNorm.weight"
        ],
        "cls/predictions/transform/LayerNorm/beta": sd["cls.predictions.transform.LayerNorm.bias"],
        "cls/predictions/output_bias": sd["cls.predictions.bias"],
        # Google stores the NSP matrix as [2, hidden], like torch's Linear.
        "cls/seq_relationship/output_weights": sd["cls.seq_relationship.weight"],
        "cls/seq_relationship/output_bias": sd["cls.seq_relationship.bias"],
    }
    for i in range(model.config.num_hidden_layers):
        t, h = f"bert/encoder/layer_{i}", f"bert.encoder.layer.{i}"
        pairs = {
            "attention/self/query": "attention.self.query",
            "attention/self/key": "attention.self.key",
            "attention/self/value": "attention.self.value",
            "attention/output/dense": "attention.output.dense",
            "intermediate/dense": "intermediate.dense",
            "output/dense": "output.dense",
        }
        for tf_name, hf_name in pairs.items():
            out[f"{t}/{tf_name}/kernel"] = sd[f"{h}.{hf_name}.weight"].T
            out[f"{t}/{tf_name}/bias"] = sd[f"{h}.{hf_name}.bias"]
        for tf_name, hf_name in (("attention/output", "attention.output"), ("output", "output")):
            out[f"{t}/{tf_name}/LayerNorm/gamma"] = sd[f"{h}.{hf_name}.LayerNorm.weight"]
            out[f"{t}/{tf_name}/LayerNorm/beta"] = sd[f"{h}.{hf_name}.LayerNorm.bias"]
    return out


def write_google_checkpoint(directory, model, extra: dict | None = None, vocab=None):
    """A Google-style directory: bert_config.json + bert_model.ckpt.{index,data-*}, including
    Adam slots and global_step as the original pre-training script saved them."""
    directory.mkdir(parents=True, exist_ok=True)
    variables = google_variables(model)
    slots = {}
    for name, value in list(variables.items())[:5]:
        slots[f"{name}/adam_m"] = np.zeros_like(value)
        slots[f"{name}/adam_v"] = np.ones_like(value)
    variables.update(slots)
    variables["global_step"] = np.array(1000, np.int64)
    variables.update(extra or {})
    names = sorted(variables)
    tf.raw_ops.SaveV2(
        prefix=str(directory / "bert_model.ckpt"),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(variables[n]) for n in names],
    )
    c = model.config
    google_config = {
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": c.hidden_act,
        "hidden_dropout_prob": 0.1,
        "hidden_size": c.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "type_vocab_size": c.type_vocab_size,
        "vocab_size": c.vocab_size,
    }
    assert c.layer_norm_eps == 1e-12, "Google's config has no layer_norm_eps field"
    (directory / "bert_config.json").write_text(json.dumps(google_config))
    if vocab is None:
        (directory / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    else:
        shutil.copyfile(vocab, directory / "vocab.txt")
