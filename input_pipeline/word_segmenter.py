"""Words for whole-word masking in text written without spaces (Chinese), as the Chinese-BERT-wwm
models choose them: a segmenter cuts each sentence into words, and every token of a
multi-character Chinese word after its first continues that word, so that whole-word masking
(`masking`, config.data.whole_word_masking) selects all of the word's characters or none.

The segmenter is jieba (pinned in requirements.txt): its bundled dictionary, precise mode, with
its HMM for words the dictionary lacks. As transformers' run_chinese_ref.py marks them, only
words made of CJK ideographs alone are joined; anything else keeps the tokenizer's own word
starts (WordPiece's "##", SentencePiece's "▁"). A token belongs to the word its first character
is in: a token starting inside a word, after the word's first character, continues it.

The flags are made while a corpus is prepared (`prepare_workers`) and stored in the records'
`word_starts`, so the choice of segmenter is part of the prepared folder's identity.
"""

import bisect
import logging
from collections.abc import Sequence

from input_pipeline import token_offsets, tokenizers
from util.errors import UserError

NAMES = ("", "jieba")  # "": the tokenizer's own word starts


def _is_ideograph(char: str) -> bool:
    """A CJK ideograph: the blocks BERT's tokenizer splits one by one (_is_chinese_char)."""
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def check_name(name: str, field: str = "config.data.word_segmenter") -> str:
    """``name`` if it names a segmenter here; else a UserError naming ``field``."""
    if name not in NAMES:
        raise UserError(f"{field}={name!r}: expected one of {', '.join(map(repr, NAMES))}")
    return name


class JiebaSegmenter:
    """Chinese words from jieba, and the word-start flags of a text's tokens that follow them."""

    def __init__(self):
        import jieba  # noqa: PLC0415 (only corpora prepared with it need it)

        logging.getLogger("jieba").setLevel(logging.WARNING)  # no dictionary-loading chatter
        self._jieba = jieba.Tokenizer()  # the bundled dictionary, loaded on first use

    def word_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of the words of two or more ideographs in ``text``."""
        return [
            (start, end)
            for word, start, end in self._jieba.tokenize(text, mode="default", HMM=True)
            if end - start > 1 and all(map(_is_ideograph, word))
        ]

    def encode_batch(
        self, tokenizer: tokenizers.Tokenizer, texts: Sequence[str]
    ) -> list[tokenizers.Encoding]:
        """``tokenizer.encode_batch(texts)`` with the tokens inside a word joined to its first."""
        encodings = []
        encoded = token_offsets.encode_batch(tokenizer, texts)
        for text, (ids, offsets) in zip(texts, encoded, strict=True):
            encoding = tokenizer.encoding_of(ids)
            spans = self.word_spans(text)
            if spans:
                firsts = [start for start, _ in spans]
                for i, (at, _) in enumerate(offsets):
                    word = bisect.bisect_right(firsts, at) - 1
                    if word >= 0 and firsts[word] < at < spans[word][1]:
                        encoding.word_starts[i] = False
            encodings.append(encoding)
        return encodings


def load(name: str) -> JiebaSegmenter | None:
    """The segmenter ``name`` (see NAMES); None for "" (the tokenizer's own word starts)."""
    return JiebaSegmenter() if check_name(name) else None
