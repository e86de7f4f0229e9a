"""The Hugging Face PyTorch reference, used by the parity and conversion tests."""

import numpy as np
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
