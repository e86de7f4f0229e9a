"""Token ids with the character offsets they cover in the text, for any tokenizer here: the
``tokenizers`` library reports them itself (WordPiece, BPE); SentencePiece reports byte offsets
into the UTF-8 text, converted here to character offsets."""

from collections.abc import Sequence

import numpy as np

from input_pipeline import tokenizers

Offsets = list[tuple[int, int]]  # [start, end) character offsets, one pair per token


def encode_batch(
    tokenizer: tokenizers.Tokenizer, texts: Sequence[str]
) -> list[tuple[list[int], Offsets]]:
    """For each text, its token ids (no special tokens) and their character offsets.

    A SentencePiece "▁" piece covers the space it stands for (none at the text's start)."""
    if isinstance(tokenizer, tokenizers.SentencePieceTokenizer):
        protos = tokenizer.processor.encode(list(texts), return_type="proto")
        return [_sentencepiece(text, proto) for text, proto in zip(texts, protos, strict=True)]
    if isinstance(tokenizer, tokenizers.LibraryTokenizer):
        encodings = tokenizer.backend.encode_batch(list(texts), add_special_tokens=False)
        return [(e.ids, e.offsets) for e in encodings]
    raise TypeError(f"no character offsets from {tokenizer!r}")


def _sentencepiece(text: str, proto) -> tuple[list[int], Offsets]:
    widths = [len(ch.encode("utf-8")) for ch in text]
    char_of_byte = np.repeat(np.arange(len(text)), widths).tolist() + [len(text)]
    pieces = proto.pieces
    return [p.id for p in pieces], [(char_of_byte[p.begin], char_of_byte[p.end]) for p in pieces]
