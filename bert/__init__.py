"""BERT in JAX/Flax.

The model library lives at the top of this package (model.py, heads.py, losses.py, flops.py)
and reads no files and no config sections. objectives/ holds the pre-training objectives;
pretrained.py loads any checkpoint with its tokenizer; convert/ moves checkpoints between
formats and export/ takes workdirs out; training/ is the machinery; finetuning/ builds
fine-tuning batches and runs; jobs/ holds one module per config.task; tasks/ holds each task
family's readers, features, decoding and metrics.
"""
