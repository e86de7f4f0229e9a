"""Task families (GLUE, SQuAD, CoNLL NER, STS): readers, features, decoding and metrics, plus
the feature helpers they share (features.py). No model code and no config sections."""
