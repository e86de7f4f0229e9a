"""SentencePiece and WordPiece tokenizers behind one small interface.

Every tokenizer here carries the five BERT special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]``
and exposes their ids, so the rest of the pipeline never needs to know which kind it has.

* SentencePiece is for new models. :func:`train_sentencepiece` (the trainer itself is in
  `sentencepiece_training`) puts the special tokens at fixed ids (``[PAD]``=0, ``[UNK]``=1,
  ``[CLS]``=2, ``[SEP]``=3, ``[MASK]``=4). They are SentencePiece *control* symbols (``[UNK]``
  is its unknown piece), so text never produces them: a literal ``"[MASK]"`` in a corpus is
  tokenized as ordinary characters.
* WordPiece is for existing checkpoints (Google's ``vocab.txt`` or an HF ``tokenizer.json``),
  run by the ``tokenizers`` library and built the way ``transformers.BertTokenizerFast`` builds
  it, so the ids are identical to HF's. As in HF, a literal special token in the text
  (``"[SEP]"``) is matched as that special token.
* Any other HF ``tokenizer.json`` (ModernBERT's byte-level BPE, RoBERTa's, ...) is run as it is
  by `bpe_tokenizer.BpeTokenizer`, with the file's own special-token layout.

``encode`` returns the ids *without* special tokens; :meth:`Tokenizer.build_inputs` assembles
``[CLS] a [SEP] b [SEP]`` and the segment ids, as HF does for a pair.
"""

import abc
import dataclasses
import hashlib
import logging
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import sentencepiece as spm
import tokenizers as hf_tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from input_pipeline import sentencepiece_training, vocab_files
from util import paths
from util.errors import UserError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # also their ids in a trained SentencePiece model
SENTENCEPIECE_WORD_START = "\u2581"  # '▁', SentencePiece's whitespace marker
WORDPIECE_PREFIX = "##"  # marks a WordPiece token that continues a word

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """What the pipeline needs of a tokenizer's ids: its special tokens' and its size (random
    replacements are drawn below it)."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int
    vocab_size: int

    @property
    def all(self) -> frozenset[int]:
        """Ids of ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (never chosen as masking targets)."""
        return frozenset((self.pad, self.unk, self.cls, self.sep, self.mask))


@dataclasses.dataclass(frozen=True)
class Encoding:
    """The tokens of one text.

    Attributes:
      ids: token ids, without special tokens.
      word_starts: ``word_starts[i]`` is True when token ``i`` begins a word (for whole-word
        masking): a piece starting with '▁' for SentencePiece, a token not starting with '##'
        for WordPiece.
    """

    ids: list[int]
    word_starts: list[bool]


class Tokenizer(abc.ABC):
    """The interface the pipeline uses (see SentencePieceTokenizer and WordPieceTokenizer).

    Instances are picklable (for worker processes); they hold no file handles.
    """

    def __init__(self, path: pathlib.Path, fingerprint: str, special: Mapping[str, int]):
        self._path = path
        self._fingerprint = fingerprint
        self._special = dict(special)
        self._word_start: list[bool] = []  # per id; filled by the subclass

    @property
    def path(self) -> pathlib.Path:
        """The file this tokenizer was loaded from."""
        return self._path

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (the embedding table's size)."""

    @abc.abstractmethod
    def encode_ids(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens."""

    @abc.abstractmethod
    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode_ids`` for many texts, multi-threaded in C++."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` without special tokens (WordPiece loses the original spacing)."""

    @abc.abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry of ``token_id``."""

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of vocabulary entry ``token``, or None if it is not in the vocabulary."""

    def encode(self, text: str) -> Encoding:
        """Tokens of ``text`` (no special tokens) with their word-start flags."""
        return self.encoding_of(self.encode_ids(text))

    def encode_batch(self, texts: Sequence[str]) -> list[Encoding]:
        """``encode`` for many texts, multi-threaded in C++."""
        return [self.encoding_of(ids) for ids in self.encode_batch_ids(texts)]

    def encode_masked(self, text: str) -> list[int]:
        """Ids of ``text`` (no special tokens) with each literal "[MASK]" as the mask token, the
        text around each one tokenized on its own (a fill-mask input)."""
        ids: list[int] = []
        for i, ids_of_piece in enumerate(self.encode_batch_ids(text.split(MASK))):
            ids.extend([self.mask_id, *ids_of_piece] if i else ids_of_piece)
        return ids

    def encoding_of(self, ids: list[int]) -> Encoding:
        """The tokens `ids` with their word-start flags."""
        table = self._word_start
        return Encoding(ids=ids, word_starts=[table[i] for i in ids])

    @property
    def pad_id(self) -> int:
        return self._special[PAD]

    @property
    def unk_id(self) -> int:
        return self._special[UNK]

    @property
    def cls_id(self) -> int:
        return self._special[CLS]

    @property
    def sep_id(self) -> int:
        return self._special[SEP]

    @property
    def mask_id(self) -> int:
        return self._special[MASK]

    @property
    def special_ids(self) -> SpecialIds:
        """The special tokens' ids and the vocabulary size."""
        s = self._special
        return SpecialIds(s[PAD], s[UNK], s[CLS], s[SEP], s[MASK], self.vocab_size)

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the file contents and of any setting that changes the ids.

        Two tokenizers with the same fingerprint give the same ids, on any machine; prepared
        data records it so that training can refuse data made with another vocabulary.
        """
        return self._fingerprint

    def build_inputs(
        self, first: Sequence[int], second: Sequence[int] | None = None
    ) -> tuple[list[int], list[int]]:
        """``[CLS] first [SEP]`` or ``[CLS] first [SEP] second [SEP]``, as BERT and HF build them.

        Returns:
          (ids, segment ids): segment 0 up to and including the first [SEP], then 1.
        """
        ids = [self.cls_id, *first, self.sep_id]
        segments = [0] * len(ids)
        if second is not None:
            ids += [*second, self.sep_id]
            segments += [1] * (len(second) + 1)
        return ids, segments

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._path)!r}, vocab_size={self.vocab_size})"


def sha256(*parts: bytes) -> str:
    """SHA-256 (hex) of ``parts``, each prefixed by its length."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def read_bytes(path: PathLike, what: str) -> tuple[pathlib.Path, bytes]:
    path = paths.path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist (or is not a file)")
    return path, path.read_bytes()


# ---------------------------------------------------------------------------------------------
# SentencePiece


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (unigram or BPE) holding the five BERT special tokens."""

    def __init__(self, model_file: PathLike, num_threads: int | None = None):
        """Loads ``model_file``.

        Args:
          model_file: a ``.model`` file, e.g. from :func:`train_sentencepiece`.
          num_threads: threads for ``encode_batch``; None uses every CPU.

        Raises:
          FileNotFoundError: no such file.
          ValueError: not a SentencePiece model, or a special token is missing.
        """
        path, proto = read_bytes(model_file, "SentencePiece model")
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as e:
            raise UserError(f"{path} is not a SentencePiece model: {e}") from e
        try:  # a damaged model can hold pieces that are not UTF-8
            pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
        except UnicodeDecodeError as e:
            raise UserError(f"{path} is not a valid SentencePiece model: {e}") from None
        special = {}
        for token in SPECIAL_TOKENS:
            token_id = processor.piece_to_id(token)
            if pieces[token_id] != token:
                hint = "train_sentencepiece makes models that have them all"
                raise UserError(
                    f"SentencePiece model {path} lacks the special token {token}; {hint}"
                )
            special[token] = token_id
        if processor.unk_id() != special[UNK]:
            unk = pieces[processor.unk_id()]
            raise UserError(f"SentencePiece model {path}: its unknown piece is {unk!r}, not {UNK}")
        super().__init__(path, sha256(b"sentencepiece", proto), special)
        self._sp = processor
        self._num_threads = num_threads or os.cpu_count() or 1
        self._word_start = [piece.startswith(SENTENCEPIECE_WORD_START) for piece in pieces]
        for token in (PAD, CLS, SEP, MASK):
            self._word_start[special[token]] = True

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def processor(self) -> spm.SentencePieceProcessor:
        """The SentencePiece processor (for what this interface lacks, e.g. offsets)."""
        return self._sp

    def encode_ids(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), out_type=int, num_threads=self._num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(list(ids))

    def id_to_token(self, token_id: int) -> str:
        return self._sp.id_to_piece(token_id)  # IndexError when out of range

    def token_to_id(self, token: str) -> int | None:
        token_id = self._sp.piece_to_id(token)
        return token_id if self._sp.id_to_piece(token_id) == token else None

    def normalize(self, text: str) -> str:
        """``text`` after the model's normalization (NFKC etc., whitespace squeezed).

        ``decode(encode(text).ids) == normalize(text)`` whenever no piece is unknown.
        """
        return self._sp.normalize(text).replace(SENTENCEPIECE_WORD_START, " ").strip(" ")


def train_sentencepiece(
    output_prefix: PathLike, vocab_size: int, **options: Any
) -> SentencePieceTokenizer:
    """Trains a SentencePiece model with ``[PAD] [UNK] [CLS] [SEP] [MASK]`` at ids 0..4.

    Writes ``{output_prefix}.model`` and ``{output_prefix}.vocab`` (piece, tab, score) with
    `sentencepiece_training.train_model`, which leaves no partial file on a failure.

    Args:
      output_prefix: path prefix of the outputs; missing parent folders are created.
      vocab_size: number of pieces, special tokens included.
      **options: the keyword arguments of `sentencepiece_training.train_model`: exactly one of
        ``sentences=`` or ``files=``, then model_type, character_coverage, byte_fallback,
        input_sentence_size, num_threads, verbose, extra_options.

    Returns:
      The trained tokenizer, loaded from the written model.
    """
    model_path = sentencepiece_training.train_model(
        output_prefix, vocab_size, SPECIAL_TOKENS, **options
    )
    tokenizer = SentencePieceTokenizer(model_path)
    ids = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS))), f"{model_path}: special ids {ids}"
    return tokenizer


# ---------------------------------------------------------------------------------------------
# WordPiece


class LibraryTokenizer(Tokenizer):
    """A tokenizer the ``tokenizers`` library runs (subclasses set `_tokenizer`, its pipeline
    with padding and truncation off, and `_vocab_size`)."""

    _tokenizer: hf_tokenizers.Tokenizer
    _vocab_size: int

    @property
    def backend(self) -> hf_tokenizers.Tokenizer:
        """The ``tokenizers`` pipeline (to save as tokenizer.json, or for offsets)."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode_ids(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)

    def id_to_token(self, token_id: int) -> str:
        token = self._tokenizer.id_to_token(token_id)
        if token is None:
            raise IndexError(f"token id {token_id} is not in {self._path}")
        return token

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)


class WordPieceTokenizer(LibraryTokenizer):
    """A BERT WordPiece vocabulary run by the ``tokenizers`` library (ids identical to HF)."""

    def __init__(
        self,
        tokenizer: hf_tokenizers.Tokenizer,
        path: pathlib.Path,
        fingerprint: str,
        lowercase: bool | None,
    ):
        """Wraps a built ``tokenizers.Tokenizer``; use :func:`load_wordpiece` to make one."""
        if not isinstance(tokenizer.model, models.WordPiece):  # load_tokenizer takes any
            kind = type(tokenizer.model).__name__
            raise UserError(f"{path} holds a {kind} model, not WordPiece: use load_tokenizer")
        tokenizer.no_padding()
        tokenizer.no_truncation()
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        _check_specials(path, vocab)
        special = {token: vocab[token] for token in SPECIAL_TOKENS}
        if tokenizer.model.unk_token != UNK:
            unk = tokenizer.model.unk_token
            raise UserError(f"{path}: the WordPiece unknown token is {unk!r}, not {UNK}")
        super().__init__(path, fingerprint, special)
        self._tokenizer = tokenizer
        self._lowercase = lowercase
        self._vocab_size = max(vocab.values()) + 1
        prefix = tokenizer.model.continuing_subword_prefix
        self._word_start = [True] * self._vocab_size
        for token, token_id in vocab.items():
            self._word_start[token_id] = not token.startswith(prefix)

    @property
    def lowercase(self) -> bool | None:
        """Whether text is lower-cased (and accents stripped); None if a tokenizer.json decides."""
        return self._lowercase


def _check_specials(path: pathlib.Path, vocab: Mapping[str, int]) -> None:
    for token in SPECIAL_TOKENS:
        if token not in vocab:
            raise UserError(f"WordPiece vocabulary {path} lacks the special token {token}")


def load_wordpiece(path: PathLike, lowercase: bool | None = None) -> WordPieceTokenizer:
    """Loads Google's ``vocab.txt`` or an HF ``tokenizer.json`` holding a WordPiece model.

    Args:
      path: a ``.txt`` vocabulary (one token per line; the line number is the id) or a
        ``.json`` file as written by the ``tokenizers`` library.
      lowercase: for a vocab.txt, whether to lower-case and strip accents (``do_lower_case``
        of HF). None takes ``do_lower_case`` from a ``tokenizer_config.json`` in the same
        folder, and without one decides from the vocabulary itself (uncased if no token holds
        an upper-case letter). Must be None for a tokenizer.json, which says it itself.

    Raises:
      FileNotFoundError: no such file.
      ValueError: malformed file, a missing special token, or a lowercase for tokenizer.json.
    """
    if paths.path(path).suffix == ".json":
        from input_pipeline import bpe_tokenizer  # it imports this module

        return bpe_tokenizer.load_tokenizer_json(path, lowercase, wordpiece_only=True)
    path, data = read_bytes(path, "WordPiece vocabulary")
    vocab = vocab_files.read_vocab_txt(path, data)
    _check_specials(path, vocab)  # before add_special_tokens would append them
    options: dict = {}
    if lowercase is None:
        lowercase, options = vocab_files.infer_lowercase(path, vocab)
        logging.info("WordPiece vocabulary %s: lowercase=%s (inferred)", path, lowercase)
    strip_accents = options.get("strip_accents")
    handle_chinese_chars = bool(options.get("tokenize_chinese_chars", True))
    tokenizer = hf_tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=handle_chinese_chars,
        strip_accents=strip_accents,  # None: follow lowercase, as HF does
        lowercase=lowercase,
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix=WORDPIECE_PREFIX)
    # HF registers the special tokens as added tokens: they are matched whole in the text.
    tokenizer.add_special_tokens(
        [hf_tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    settings = f"{lowercase},{strip_accents},{handle_chinese_chars}".encode()
    return WordPieceTokenizer(tokenizer, path, sha256(b"vocab.txt", settings, data), lowercase)


# ---------------------------------------------------------------------------------------------
# Loading by path


# In a folder: the SentencePiece model an HF export of ours carries beside the tokenizer.json
# made from it (bert/convert/hf_tokenizer.py), then HF's files, then any single *.model.
_FOLDER_ORDER = ("sentencepiece.model", "tokenizer.json", "vocab.txt")


def _find_in_directory(directory: pathlib.Path) -> pathlib.Path:
    named = [directory / n for n in _FOLDER_ORDER if (directory / n).is_file()]
    if named:
        return named[0]
    found = sorted(directory.glob("*.model"))
    if not found:
        raise UserError(f"no tokenizer in {directory}: no tokenizer.json/vocab.txt/*.model")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise UserError(f"{directory} holds several SentencePiece models ({names}); name one")
    return found[0]


def load_tokenizer(path: PathLike, lowercase: bool | None = None) -> Tokenizer:
    """Loads a tokenizer, its kind told by the path.

    ``*.model`` is SentencePiece, ``*.txt`` a WordPiece vocab.txt, ``*.json`` an HF
    tokenizer.json (WordPiece, or any other model as `bpe_tokenizer.BpeTokenizer`); in a folder,
    ``sentencepiece.model`` (in an HF directory exported by bert.convert) wins over
    ``tokenizer.json``, then ``vocab.txt``, then a single ``*.model``.

    Args:
      path: a file or a folder (e.g. an HF checkpoint folder).
      lowercase: only for a vocab.txt; see :func:`load_wordpiece`.
    """
    path = paths.path(path)
    if path.is_dir():
        path = _find_in_directory(path)
    elif not path.exists():
        raise UserError(f"tokenizer {path} does not exist")
    if path.suffix == ".model":
        if lowercase is not None:
            raise UserError(f"{path}: lowercase does not apply to a SentencePiece model")
        return SentencePieceTokenizer(path)
    if path.suffix == ".json":
        from input_pipeline import bpe_tokenizer  # it imports this module

        return bpe_tokenizer.load_tokenizer_json(path, lowercase)
    if path.suffix == ".txt":
        return load_wordpiece(path, lowercase)
    raise UserError(
        f"cannot tell the tokenizer kind of {path}: expected a .model (SentencePiece), "
        "a vocab .txt (WordPiece) or a tokenizer.json, or a folder holding one"
    )
