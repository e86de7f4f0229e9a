"""The pre-training batch that `pretraining.make_pretraining_dataset` yields: its keys, and the
settings that decide it.

Kept free of TensorFlow, so that whoever builds or names a batch need not import the pipeline.
"""

import dataclasses

# input_ids, segment_ids, input_mask: int32 [batch, seq_length];
# masked_lm_positions, masked_lm_ids: int32 [batch, max_predictions_per_seq];
# masked_lm_weights: float32 [batch, max_predictions_per_seq] (0 for padding predictions);
# next_sentence_labels: int32 [batch] (0: B follows A, 1: B is random; 0 when packed).
BATCH_KEYS = (
    "input_ids",
    "segment_ids",
    "input_mask",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)
# Packed rows with pack_attention "document" also hold position_ids: int32 [batch, seq_length],
# 0 where each document's part starts (the row's [CLS] starts its first), counting up from there
# (the closing [SEP] and the padding continue the row's last part).
POSITION_KEY = "position_ids"
# How a packed row's tokens attend: "row" (all of the row, one sequence) or "document" (each
# document's part to itself, positions restarting at its start).
PACK_ATTENTIONS = ("row", "document")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What decides a pre-training batch, besides the files, the seed and the host.

    Attributes:
      seq_length: L, tokens per example, special tokens included.
      max_predictions_per_seq: P, masked positions per example (BERT: 20 at L=128, 80 at 512).
      mode: "nsp" (sentence pairs with next-sentence labels, as the original BERT) or "packed"
        (one segment of whole sentences packed across documents, labels 0).
      mask_rate: share of the non-special tokens chosen for prediction (BERT's 0.15).
      whole_word_masking: choose whole words rather than single tokens.
      short_seq_prob: NSP only: chance that a document's pairs aim at a random shorter length
        (BERT's 0.1).
      nsp_random_prob: NSP only: chance that B comes from another document.
      pack_attention: packed only: "row" (the row is one sequence) or "document" (batches also
        hold POSITION_KEY, restarting at each document's part; see PACK_ATTENTIONS).
    """

    seq_length: int
    max_predictions_per_seq: int
    mode: str = "nsp"
    mask_rate: float = 0.15
    whole_word_masking: bool = False
    short_seq_prob: float = 0.1
    nsp_random_prob: float = 0.5
    pack_attention: str = "row"
