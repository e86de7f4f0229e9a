"""The rows a bi-encoder trains on, as every pair reader returns them (bert/tasks/pairs.py,
bert/tasks/squad_pairs.py)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class PairSet:
    """Rows of (anchor, positive[, negative][, score]), in file order.

    Attributes:
      anchors: the first text of each row (a query, a question, STS sentence1).
      positives: the second text (a relevant passage, STS sentence2).
      negatives: a hard negative per row (triplets), else None.
      scores: a similarity score per row (scored pairs; as in the file, e.g. 0..5 for STS),
        else None.
      skipped: rows left out on purpose (SQuAD questions whose answer is not in the context).
    """

    anchors: tuple[str, ...]
    positives: tuple[str, ...]
    negatives: tuple[str, ...] | None = None
    scores: tuple[float, ...] | None = None
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.anchors)
