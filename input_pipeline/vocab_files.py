"""WordPiece vocabulary files: Google's ``vocab.txt`` read as HF reads it, and the lower-casing
that a ``tokenizer_config.json`` beside it (or else the vocabulary itself) implies."""

import io
import json
import pathlib
from collections.abc import Mapping

from util.errors import UserError


def read_vocab_txt(path: pathlib.Path, data: bytes) -> dict[str, int]:
    """Google's vocab.txt, read as HF's ``load_vocab`` does (a repeated token keeps its last id)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 (byte offset {e.start})") from e
    vocab = {}
    for index, line in enumerate(io.StringIO(text, newline=None)):
        vocab[line.rstrip("\n")] = index
    if not vocab:
        raise UserError(f"WordPiece vocabulary {path} is empty")
    return vocab


def infer_lowercase(path: pathlib.Path, vocab: Mapping[str, int]) -> tuple[bool, dict]:
    """Lower-casing from a ``tokenizer_config.json`` beside the vocabulary, else from the vocab.

    Returns:
      (lowercase, the config's strip_accents and tokenize_chinese_chars if it has them).
    """
    config_path = path.parent / "tokenizer_config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{config_path} is not valid JSON: {e}") from e
        if not isinstance(config, dict):
            raise UserError(f"{config_path}: expected a JSON object")
        for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
            if config.get(key) is not None and not isinstance(config[key], bool):
                raise UserError(f"{config_path}: {key} must be true, false or null")
        if config.get("do_lower_case") is not None:
            names = ("strip_accents", "tokenize_chinese_chars")
            options = {k: config[k] for k in names if config.get(k) is not None}
            return config["do_lower_case"], options
    # An uncased vocabulary has no upper-case letter outside the bracketed special tokens
    # ([CLS], and the <S> and <T> placeholders of Google's uncased Chinese vocabulary).
    cased = any(
        token[:1] + token[-1:] not in ("[]", "<>") and token != token.lower() for token in vocab
    )
    return not cased, {}
