"""The pre-training batch that `pretraining.make_pretraining_dataset` yields: its keys.

Kept free of TensorFlow, so that the train step (bert/training/objectives.py) can name the keys
without importing the data pipeline.
"""

# input_ids, segment_ids, input_mask: int32 [batch, seq_length];
# masked_lm_positions, masked_lm_ids: int32 [batch, max_predictions_per_seq];
# masked_lm_weights: float32 [batch, max_predictions_per_seq] (0 for padding predictions);
# next_sentence_labels: int32 [batch] (0: B follows A, 1: B is random).
BATCH_KEYS = (
    "input_ids",
    "segment_ids",
    "input_mask",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)
