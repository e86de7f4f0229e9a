"""The command line of `python -m input_pipeline.prepare` (`prepare.main` runs it): its flags,
each `prepare.prepare`'s argument of the same name."""

import argparse

from input_pipeline import corpora, word_segmenter
from input_pipeline import sentencepiece_training as sp_training
from input_pipeline.shards import VERIFY_MODES
from util import console


def parse_bool(text: str) -> bool:
    """true/false, 1/0, yes/no."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parser() -> argparse.ArgumentParser:
    """The flags of `python -m input_pipeline.prepare` (`prepare.main`)."""
    parser = console.ArgumentParser(
        prog="python -m input_pipeline.prepare",
        description="Tokenize a corpus into sharded TFRecord files and a manifest.json.",
    )
    add = parser.add_argument
    add("--input", action="append", required=True, help="glob of input files; repeatable")
    add("--output", required=True, help="output folder")
    add("--format", required=True, choices=corpora.FORMATS, help="input format")
    add("--tokenizer", help="vocab.txt, tokenizer.json, SentencePiece .model, or a folder")
    add("--lowercase", type=parse_bool, help="vocab.txt only; default: inferred")
    add("--train_sentencepiece_vocab_size", type=int, help="train SentencePiece (no --tokenizer)")
    add("--sentencepiece_model_type", default="unigram", choices=sp_training.MODEL_TYPES)
    add("--sentencepiece_sample_sentences", type=int, default=1_000_000, help="training sample")
    add("--sentencepiece_lowercase", type=parse_bool, default=False, help="train it uncased")
    add("--num_shards", type=int, help="default: one per 256 MiB of input, 16 to 1024")
    add("--workers", type=int, help="tokenizing processes; default: all CPUs; 0: in-process")
    add("--text_field", default="text", help="field holding the text (jsonl, parquet)")
    add("--errors", default="strict", choices=corpora.ERRORS, help="invalid UTF-8 handling")
    add("--sentence_split", type=parse_bool, default=True, help="cut paragraphs into sentences")
    add("--word_segmenter", default="", choices=word_segmenter.NAMES, help="jieba: Chinese words")
    add("--chunk_chars", type=int, default=1 << 20, help="characters per unit of work")
    add("--verify", default="checksum", choices=VERIFY_MODES, help="check of finished shards")
    add("--force", action="store_true", help="redo even if the output is finished")
    return parser
