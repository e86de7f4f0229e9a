"""BERT in JAX/Flax.

The model library lives at the top of this package (model.py, heads.py, losses.py, flops.py)
and reads no files and no config sections. pretrained.py loads any checkpoint with its tokenizer;
convert/ moves checkpoints between formats; training/ is the machinery; jobs/ holds one module
per config.task; tasks/ holds each task family's readers, features, decoding and metrics.
"""
