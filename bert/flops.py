"""Training FLOPs of a BERT step and model FLOPs utilisation (MFU).

Counts matrix multiplications only (2 FLOPs per multiply-add), forward x 3 for forward plus
backward, as in the PaLM/Megatron MFU convention. The MLM head is counted on the gathered
masked positions, which is what this project computes.
"""

from bert.model import BertConfig

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


def forward_flops_per_sequence(
    config: BertConfig, seq_length: int, num_predictions: int, nsp: bool = True
) -> float:
    """Forward matmul FLOPs for one sequence of `seq_length` tokens with `num_predictions`
    masked positions through the MLM head."""
    h, i, v, s = config.hidden_size, config.intermediate_size, config.vocab_size, seq_length
    per_token_layer = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * s * h  # projections + attention
    encoder = config.num_layers * per_token_layer * s
    mlm = 2 * (h * h + h * v) * num_predictions
    pooler_nsp = 2 * (h * h + 2 * h) if nsp else 0
    return float(encoder + mlm + pooler_nsp)


def train_flops_per_sequence(
    config: BertConfig, seq_length: int, num_predictions: int, nsp: bool = True
) -> float:
    """Forward + backward (3x forward) FLOPs for one training sequence."""
    return 3.0 * forward_flops_per_sequence(config, seq_length, num_predictions, nsp)


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
