"""A Hugging Face ``tokenizer.json`` of any model type but WordPiece, run as it is by the
``tokenizers`` library: the byte-level BPE of ModernBERT (GPT-NeoX/OLMo style), RoBERTa and
GPT-2, and also Unigram or WordLevel files. Ids, offsets and special tokens are the file's, so
they equal what ``transformers.AutoTokenizer`` gives for the same folder.

* Special tokens: ``[CLS] [SEP] [MASK] [PAD] [UNK]`` (BERT and ModernBERT names) or, when the
  file lacks them, ``<s> </s> <mask> <pad> <unk>`` (RoBERTa names).
* ``build_inputs`` follows the file's post-processor (``[CLS] a [SEP]`` and ``[CLS] a [SEP] b
  [SEP]`` for ModernBERT, ``<s> a </s></s> b </s>`` for RoBERTa), with its type ids; a file
  whose post-processor does not frame one text as ``cls text sep`` is refused.
* Word starts (whole-word masking): a token starting with 'Ġ' (the byte-level space), or with
  the Metaspace marker '▁'; with neither pre-tokenizer, a token without the model's
  continuing-subword prefix; every added token; the first token of every text.
* A literal mask token in text (``"a [MASK]"``) is matched as the mask token with the file's
  own strip rules (ModernBERT's ``[MASK]`` takes the space before it, as HF does).

WordPiece files stay with `tokenizers.WordPieceTokenizer`; :func:`load_tokenizer_json` picks.
"""

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import tokenizers as hf_tokenizers
from tokenizers import models

from input_pipeline import tokenizers
from input_pipeline.tokenizers import CLS, MASK, PAD, SEP, UNK, LibraryTokenizer, Tokenizer
from util.errors import UserError

# Special-token names by file style: ours and BERT's and ModernBERT's, then RoBERTa's.
BERT_NAMES = {CLS: CLS, SEP: SEP, MASK: MASK, PAD: PAD, UNK: UNK}
ROBERTA_NAMES = {CLS: "<s>", SEP: "</s>", MASK: "<mask>", PAD: "<pad>", UNK: "<unk>"}
BYTE_LEVEL_SPACE = "\u0120"  # 'Ġ', the byte-level alphabet's space: begins a word's token
TOKENIZER_CONFIG = "tokenizer_config.json"  # HF's settings beside a tokenizer.json
# transformers' clean-up of decoded text (clean_up_tokenization_spaces): each left, the right.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # fmt: skip

_Template = tuple[tuple[int | str, int], ...]  # (a token id, or "A"/"B" for a text; type id)


class BpeTokenizer(LibraryTokenizer):
    """A non-WordPiece ``tokenizer.json`` (byte-level BPE above all) run by ``tokenizers``."""

    def __init__(self, backend: hf_tokenizers.Tokenizer, path: pathlib.Path, data: bytes):
        """Wraps the parsed ``tokenizer.json`` at ``path`` (its bytes ``data``); use
        :func:`load_tokenizer_json` to make one.

        Raises:
          UserError: a special token is missing, or the post-processor does not put one text
            between a [CLS] and a [SEP]-like token.
        """
        backend.no_padding()
        backend.no_truncation()
        vocab = backend.get_vocab(with_added_tokens=True)
        special = _special_ids(path, vocab)
        super().__init__(path, fingerprint_json(data), special)
        self._tokenizer = backend
        self._vocab_size = max(vocab.values()) + 1
        added = backend.get_added_tokens_decoder()
        self._mask_is_added = special[MASK] in added
        self._single = _template(backend, path, pair=False)
        self._pair = _template(backend, path, pair=True)
        if [item for item, _ in self._single] != [special[CLS], "A", special[SEP]]:
            needed = f"{backend.id_to_token(special[CLS])} text {backend.id_to_token(special[SEP])}"
            raise UserError(
                f"{path}: its post-processor frames one text as '{_show(self._single, backend)}'"
                f"; this project needs '{needed}' (a TemplateProcessing post-processor)"
            )
        self._word_start = _word_start_table(json.loads(data), vocab, added, self._vocab_size)
        self._clean_up = _clean_up_setting(path.parent / TOKENIZER_CONFIG)

    def encoding_of(self, ids: list[int]) -> tokenizers.Encoding:
        encoding = super().encoding_of(ids)
        if ids:  # a text's first token begins a word even without a space before it
            encoding.word_starts[0] = True
        return encoding

    def encode_masked(self, text: str) -> list[int]:
        """The text in one piece, each literal "[MASK]" as the file's mask token (with its strip
        rules, e.g. the space before it), as transformers tokenizes a fill-mask input."""
        if not self._mask_is_added:  # the file would not match its mask token in text
            return super().encode_masked(text)
        mask = self._tokenizer.id_to_token(self.mask_id)
        return self.encode_ids(text.replace(MASK, mask) if mask != MASK else text)

    def decode(self, ids: Sequence[int]) -> str:
        text = super().decode(ids)
        if self._clean_up:
            for before, after in _CLEAN_UP:
                text = text.replace(before, after)
        return text

    def build_inputs(
        self, first: Sequence[int], second: Sequence[int] | None = None
    ) -> tuple[list[int], list[int]]:
        """The post-processor's layout: ``[CLS] first [SEP]``, ``[CLS] first [SEP] second [SEP]``
        for ModernBERT, ``<s> first </s></s> second </s>`` for RoBERTa.

        Returns:
          (ids, segment ids): the segment ids are the template's type ids.
        """
        ids: list[int] = []
        segments: list[int] = []
        texts = {"A": first, "B": second}
        for item, type_id in self._single if second is None else self._pair:
            part = texts[item] if isinstance(item, str) else [item]
            ids.extend(part)
            segments.extend([type_id] * len(part))
        return ids, segments


def _special_ids(path: pathlib.Path, vocab: dict[str, int]) -> dict[str, int]:
    """Ids of the five special tokens, by BERT's names, else by RoBERTa's."""
    for names in (BERT_NAMES, ROBERTA_NAMES):
        if all(name in vocab for name in names.values()):
            return {ours: vocab[name] for ours, name in names.items()}
    missing = " ".join(name for name in BERT_NAMES.values() if name not in vocab)
    roberta = " ".join(ROBERTA_NAMES.values())
    raise UserError(f"{path} lacks the special token(s) {missing} (nor has it all of {roberta})")


def _template(backend: hf_tokenizers.Tokenizer, path: pathlib.Path, pair: bool) -> _Template:
    """The post-processor's layout, read off a probe: special token ids and "A"/"B" for the
    texts, each with its type id."""
    probe = backend.encode("Hello world.", "Bye now." if pair else None, add_special_tokens=True)
    items: list[tuple[int | str, int]] = []
    for token_id, sequence, type_id in zip(
        probe.ids, probe.sequence_ids, probe.type_ids, strict=True
    ):
        item: int | str = token_id if sequence is None else "AB"[sequence]
        if sequence is None or not items or items[-1][0] != item:
            items.append((item, type_id))
    texts = [item for item, _ in items if isinstance(item, str)]
    if texts != (["A", "B"] if pair else ["A"]):
        what = "a pair" if pair else "one text"
        raise UserError(f"{path}: cannot tell how its post-processor lays out {what}")
    return tuple(items)


def _show(template: _Template, backend: hf_tokenizers.Tokenizer) -> str:
    shown = [item if isinstance(item, str) else backend.id_to_token(item) for item, _ in template]
    return " ".join("text" if item == "A" else item for item in shown)


def _pre_tokenizer_types(step: Any) -> list[dict]:
    """The pre-tokenizer steps of a tokenizer.json, a Sequence flattened."""
    if not isinstance(step, dict):
        return []
    if step.get("type") == "Sequence":
        return [s for inner in step.get("pretokenizers", []) for s in _pre_tokenizer_types(inner)]
    return [step]


def _word_start_table(
    config: dict, vocab: dict[str, int], added: dict[int, Any], size: int
) -> list[bool]:
    """Per id, whether the token begins a word (see the module doc)."""
    steps = {s.get("type"): s for s in _pre_tokenizer_types(config.get("pre_tokenizer"))}
    prefix, continuing = None, None
    if "ByteLevel" in steps:
        prefix = BYTE_LEVEL_SPACE
    elif "Metaspace" in steps:
        prefix = steps["Metaspace"].get("replacement") or tokenizers.SENTENCEPIECE_WORD_START
    else:
        continuing = (config.get("model") or {}).get("continuing_subword_prefix") or None
    table = [True] * size
    for token, token_id in vocab.items():
        if prefix is not None:
            table[token_id] = token.startswith(prefix)
        elif continuing is not None:
            table[token_id] = not token.startswith(continuing)
    for token_id in added:
        table[token_id] = True
    return table


def _clean_up_setting(path: pathlib.Path) -> bool:
    """``clean_up_tokenization_spaces`` of the tokenizer_config.json at ``path`` (False, HF's
    default, without one); it changes decoded text only, never ids."""
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is not a JSON object")
    return bool(config.get("clean_up_tokenization_spaces", False))


def fingerprint_json(data: bytes) -> str:
    """The fingerprint of a tokenizer.json holding ``data`` (the file says all that changes ids)."""
    return tokenizers.sha256(b"tokenizer.json", data)


def read_tokenizer_json(
    path: tokenizers.PathLike, lowercase: bool | None = None
) -> tuple[pathlib.Path, bytes, hf_tokenizers.Tokenizer]:
    """The path, bytes and ``tokenizers`` pipeline of a tokenizer.json.

    Raises:
      UserError: no such file, a lowercase given (the file sets its own normalisation), or the
        file is malformed (named, with the parser's first line).
    """
    path, data = tokenizers.read_bytes(path, "tokenizer file")
    if lowercase is not None:
        raise UserError(f"{path}: a tokenizer.json sets its own lower-casing; pass lowercase=None")
    try:
        return path, data, hf_tokenizers.Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a plain Exception; also bad UTF-8
        message = str(e).strip().splitlines() or [type(e).__name__]  # one line
        raise UserError(f"{path} is not a valid tokenizer.json: {message[0]}") from None


def load_tokenizer_json(
    path: tokenizers.PathLike, lowercase: bool | None = None, wordpiece_only: bool = False
) -> Tokenizer:
    """A ``tokenizer.json``: WordPiece as `tokenizers.WordPieceTokenizer`, any other model type
    as :class:`BpeTokenizer`.

    Args:
      path: the file.
      lowercase: must be None (the file sets its own normalisation).
      wordpiece_only: refuse other model types (`tokenizers.load_wordpiece`).

    Raises:
      UserError: see :func:`read_tokenizer_json`, and a file unfit for the class it needs.
    """
    path, data, backend = read_tokenizer_json(path, lowercase)
    if wordpiece_only or isinstance(backend.model, models.WordPiece):
        return tokenizers.WordPieceTokenizer(backend, path, fingerprint_json(data), None)
    return BpeTokenizer(backend, path, data)
