"""Record shards for the input-pipeline tests: real Wikipedia text, and tagged synthetic text.

Synthetic token ids tell where they come from: id = BASE + document * STRIDE + position, the
position counted over the whole document, so a test can check which document a token belongs
to and whether tokens are consecutive.
"""

import dataclasses
import pathlib

import numpy as np
import tensorflow as tf

from input_pipeline import corpora, records, tokenizers

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4  # special ids of the synthetic vocabulary
BASE, STRIDE = 10, 1000


def write_shards(directory: pathlib.Path, shards: list[list[bytes]]) -> list[pathlib.Path]:
    """Writes serialised records as `shard-NNNNN-of-MMMMM.tfrecord` files; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, serialized in enumerate(shards):
        path = directory / records.SHARD_PATTERN.format(index=index, count=len(shards))
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in serialized:
                writer.write(record)
        paths.append(path)
    return paths


def synthetic_document(
    document: int, rng: np.random.Generator, long_sentence: bool = False
) -> tuple[list[list[int]], list[list[bool]]]:
    """Sentences of tagged tokens (3 to 30 tokens each, one of 300 if asked) and word starts."""
    lengths = rng.integers(3, 31, size=rng.integers(2, 25)).tolist()
    if long_sentence:
        lengths.insert(len(lengths) // 2, 300)
    sentences, starts, position = [], [], 0
    for length in lengths:
        sentences.append(
            list(
                range(
                    BASE + document * STRIDE + position,
                    BASE + document * STRIDE + position + length,
                )
            )
        )
        flags = rng.random(length) < 0.6
        flags[0] = True
        starts.append(flags.tolist())
        position += length
    assert position < STRIDE
    return sentences, starts


@dataclasses.dataclass(frozen=True)
class Synthetic:
    """Tagged synthetic shards (document d in file d % number of files)."""

    files: list[pathlib.Path]
    documents: dict[int, list[list[int]]]  # the sentences of every document
    vocab_size: int

    def tokens(self) -> list[int]:
        return [t for sentences in self.documents.values() for s in sentences for t in s]


def write_synthetic(
    directory: pathlib.Path, num_files: int, documents_per_file: int, seed: int = 0
) -> Synthetic:
    """Writes tagged synthetic shards; every 7th document holds a 300-token sentence."""
    rng = np.random.default_rng(seed)
    shards: list[list[bytes]] = [[] for _ in range(num_files)]
    documents = {}
    for document in range(num_files * documents_per_file):
        sentences, starts = synthetic_document(document, rng, long_sentence=document % 7 == 3)
        shards[document % num_files].append(records.encode_document(sentences, starts))
        documents[document] = sentences
    vocab_size = BASE + num_files * documents_per_file * STRIDE
    return Synthetic(write_shards(directory, shards), documents, vocab_size)


def document_of(ids: np.ndarray) -> np.ndarray:
    """The synthetic document of each token id."""
    return (ids - BASE) // STRIDE


def write_wikipedia(
    shared_data: pathlib.Path, directory: pathlib.Path, num_files: int
) -> tuple[list[pathlib.Path], tokenizers.Tokenizer]:
    """Tokenizes the first `num_files` Wikipedia files (uncased WordPiece), a shard each."""
    tokenizer = tokenizers.load_tokenizer(shared_data / "vocab" / "bert-base-uncased-vocab.txt")
    sources = sorted((shared_data / "wikipedia" / "AA").glob("wiki_*"))[:num_files]
    shards = []
    for source in sources:
        serialized = []
        for document in corpora.read_wikiextractor(source):
            encodings = tokenizer.encode_batch(document)
            serialized.append(
                records.encode_document(
                    [e.ids for e in encodings], [e.word_starts for e in encodings]
                )
            )
        shards.append(serialized)
    return write_shards(directory, shards), tokenizer


def unmasked(batch: dict[str, np.ndarray]) -> np.ndarray:
    """The tokens before masking: input_ids with the masked_lm_ids put back."""
    ids = batch["input_ids"].copy()
    for row, (positions, tokens, weights) in enumerate(
        zip(
            batch["masked_lm_positions"],
            batch["masked_lm_ids"],
            batch["masked_lm_weights"],
            strict=True,
        )
    ):
        ids[row, positions[weights > 0]] = tokens[weights > 0]
    return ids
