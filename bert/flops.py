"""Training FLOPs of a BERT step and model FLOPs utilisation (MFU).

Counts matrix multiplications only (2 FLOPs per multiply-add), forward x 3 for forward plus
backward, as in the PaLM/Megatron MFU convention. The encoder and each head are counted apart,
so that an objective (bert/objectives/) adds up the heads it trains; the MLM head is counted on
the gathered masked positions, which is what this project computes.
"""

from bert.model import BertConfig

# forward + backward FLOPs per forward FLOP
TRAIN_PER_FORWARD = 3.0

# Dense bf16 peak FLOP/s per device, by a substring of `jax.Device.device_kind` (first match).
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("TPU v6 lite", 918e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v4", 275e12),
    ("TPU v3", 123e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("V100", 125e12),
)


def encoder_flops(config: BertConfig, seq_length: int) -> float:
    """Forward matmul FLOPs of the encoder over one sequence of `seq_length` tokens (a gated
    MLP has three [h, i] matrices; a local-attention layer's scores and sums span its window)."""
    h, i, s = config.hidden_size, config.intermediate_size, seq_length
    mlp = (3 if config.gated_mlp else 2) * h * i
    total = 0.0
    for layer in range(config.num_layers):
        span = min(s, config.local_window + 1) if config.is_local(layer) else s
        total += (2 * (4 * h * h + mlp) + 2 * 2 * span * h) * s  # projections + attention
    return total


def mlm_head_flops(config: BertConfig, num_predictions: int) -> float:
    """Forward FLOPs of the MLM head (transform, then the vocabulary) on `num_predictions`
    masked positions."""
    h, v = config.hidden_size, config.vocab_size
    return float(2 * (h * h + h * v) * num_predictions)


def nsp_head_flops(config: BertConfig) -> float:
    """Forward FLOPs of the pooler and the next-sentence head over one sequence."""
    h = config.hidden_size
    return float(2 * (h * h + 2 * h))


def peak_flops(device_kind: str, override: float | None = None) -> float | None:
    """Peak FLOP/s of one device: `override` if given (> 0), else the table, else None."""
    if override:
        return float(override)
    for name, flops in PEAK_FLOPS:
        if name.lower() in device_kind.lower():
            return flops
    return None


def mfu(flops_per_second: float, num_devices: int, peak_per_device: float | None) -> float | None:
    """Achieved FLOP/s as a fraction of the devices' peak, or None when the peak is unknown."""
    if not peak_per_device:
        return None
    return flops_per_second / (num_devices * peak_per_device)
