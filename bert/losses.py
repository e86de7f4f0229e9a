"""Losses and metrics as (sum, denominator) pairs in float32, so they add up across devices,
hosts and accumulation steps before the one division at the end."""

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def weighted_cross_entropy(logits: Array, labels: Array, weights: Array) -> tuple[Array, Array]:
    """Sum of per-example cross-entropy times weight, and the sum of weights.

    Args:
      logits: [..., classes], any float dtype (computed in float32).
      labels: [...] integer class ids.
      weights: [...] 0/1 (or real) weights; 0 drops an example (padding predictions).
    """
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    weights = weights.astype(jnp.float32)
    return jnp.sum(losses * weights), jnp.sum(weights)


def weighted_accuracy(logits: Array, labels: Array, weights: Array) -> tuple[Array, Array]:
    """Number of (weighted) correct argmax predictions, and the sum of weights."""
    weights = weights.astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.sum(correct * weights), jnp.sum(weights)


def pretraining_loss(
    mlm_logits: Array,
    masked_lm_ids: Array,
    masked_lm_weights: Array,
    nsp_logits: Array | None,
    next_sentence_labels: Array | None,
    mlm_denominator: Array | None = None,
    nsp_denominator: Array | None = None,
) -> tuple[Array, dict[str, tuple[Array, Array]]]:
    """BERT's objective: mean MLM cross-entropy over real predictions + mean NSP cross-entropy.

    Args:
      mlm_logits: [batch, predictions, vocab] at the gathered masked positions.
      masked_lm_ids: [batch, predictions] original token ids.
      masked_lm_weights: [batch, predictions] 1 for a real prediction, 0 for padding.
      nsp_logits: [batch, 2], or None in MLM-only pre-training.
      next_sentence_labels: [batch] 0 = B follows A, 1 = B is random; or None.
      mlm_denominator, nsp_denominator: divide the sums by these instead of this batch's own
        counts: with gradient accumulation, the counts of the whole batch, so that the
        accumulated gradient equals the full-batch gradient exactly.

    Returns:
      (loss, metrics) where metrics maps names to (sum, denominator) pairs.
    """
    mlm_sum, mlm_den = weighted_cross_entropy(mlm_logits, masked_lm_ids, masked_lm_weights)
    metrics = {
        "mlm_loss": (mlm_sum, mlm_den),
        "mlm_accuracy": weighted_accuracy(mlm_logits, masked_lm_ids, masked_lm_weights),
    }
    mlm_den_total = mlm_den if mlm_denominator is None else mlm_denominator
    loss = mlm_sum / jnp.maximum(mlm_den_total, 1.0)
    if nsp_logits is not None and next_sentence_labels is not None:
        ones = jnp.ones(next_sentence_labels.shape, jnp.float32)
        nsp_sum, nsp_den = weighted_cross_entropy(nsp_logits, next_sentence_labels, ones)
        metrics["nsp_loss"] = (nsp_sum, nsp_den)
        metrics["nsp_accuracy"] = weighted_accuracy(nsp_logits, next_sentence_labels, ones)
        nsp_den_total = nsp_den if nsp_denominator is None else nsp_denominator
        loss = loss + nsp_sum / jnp.maximum(nsp_den_total, 1.0)
    return loss, metrics


# Fine-tuning objectives. Each returns {name: (sum, count)} with a "loss" entry; rows or tokens
# without a label (class id -1, score NaN) count for nothing.


def classification_sums(logits: Array, labels: Array) -> dict[str, tuple[Array, Array]]:
    """Cross-entropy and accuracy; logits [..., classes], labels [...] (-1: no label)."""
    weights = labels >= 0
    safe = jnp.where(weights, labels, 0)
    return {
        "loss": weighted_cross_entropy(logits, safe, weights),
        "accuracy": weighted_accuracy(logits, safe, weights),
    }


def regression_sums(predictions: Array, targets: Array) -> dict[str, tuple[Array, Array]]:
    """Squared error (as BERT/HF use for STS-B); predictions [batch, 1], targets [batch]."""
    weights = (~jnp.isnan(targets)).astype(jnp.float32)
    errors = jnp.square(predictions[:, 0].astype(jnp.float32) - jnp.nan_to_num(targets))
    return {"loss": (jnp.sum(errors * weights), jnp.sum(weights))}


def multi_label_sums(logits: Array, targets: Array) -> dict[str, tuple[Array, Array]]:
    """Sigmoid cross-entropy averaged over the classes of each row (HF's multi-label loss,
    BCEWithLogitsLoss, is its mean over rows); logits and targets [batch, classes] (0/1), a
    row of NaN targets carries no label."""
    labelled = ~jnp.isnan(targets[:, 0])
    z, y = logits.astype(jnp.float32), jnp.nan_to_num(targets).astype(jnp.float32)
    per_class = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))  # stable form
    weights = labelled.astype(jnp.float32)
    return {"loss": (jnp.sum(jnp.mean(per_class, axis=-1) * weights), jnp.sum(weights))}


def span_sums(
    start_logits: Array, end_logits: Array, start_positions: Array, end_positions: Array
) -> dict[str, tuple[Array, Array]]:
    """Mean of the start and end cross-entropies over each row's positions (BERT's SQuAD loss).

    start_logits, end_logits: [batch, length]; start_positions, end_positions: [batch].
    """
    ones = jnp.ones(start_positions.shape, jnp.float32)
    start_sum, count = weighted_cross_entropy(start_logits, start_positions, ones)
    end_sum, _ = weighted_cross_entropy(end_logits, end_positions, ones)
    start_right, _ = weighted_accuracy(start_logits, start_positions, ones)
    end_right, _ = weighted_accuracy(end_logits, end_positions, ones)
    return {
        "loss": ((start_sum + end_sum) / 2, count),
        "span_accuracy": ((start_right + end_right) / 2, count),
    }


def label_count(labels: Array) -> Array:
    """How many entries of `labels` carry a label (class id >= 0, a score that is not NaN, a
    multi-hot row [batch, classes] that is not NaN): the denominator of the losses above."""
    if jnp.issubdtype(labels.dtype, jnp.floating):
        rows = labels[:, 0] if labels.ndim == 2 else labels
        return jnp.sum(~jnp.isnan(rows)).astype(jnp.float32)
    return jnp.sum(labels >= 0).astype(jnp.float32)
