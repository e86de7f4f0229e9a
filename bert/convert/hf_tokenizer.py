"""Our tokenizers as Hugging Face tokenizer files: `tokenizer.json` (run by the `tokenizers`
library, as `AutoTokenizer` loads it), `tokenizer_config.json` and `special_tokens_map.json`.

A SentencePiece model of ours (input_pipeline/sentencepiece_training.py) becomes a Unigram or
BPE model with the SentencePiece model's own pieces and scores, its own normalisation (the
compiled character map stored in the model, then its whitespace rules), the metaspace
pre-tokenisation and the [CLS]/[SEP] template our encoder inputs use, so that text splits into
exactly our ids. The SentencePiece model is written beside it too, as `sentencepiece.model`.
A WordPiece tokenizer is written as it runs here (its tokenizer.json, and vocab.txt); any
other tokenizer.json (ModernBERT's byte-level BPE) is copied with the HF files beside it.

The five special tokens are registered as special added tokens, as HF's BERT tokenizers have
them: a literal "[MASK]" in text is the mask token (what fill-mask pipelines expect), whereas
our SentencePiece encoder spells it out as characters.
"""

import json
import pathlib
import shutil
from typing import Any

import tokenizers as hf_tokenizers
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors

from input_pipeline.bpe_tokenizer import BpeTokenizer
from input_pipeline.tokenizers import (
    CLS,
    MASK,
    PAD,
    SENTENCEPIECE_WORD_START,
    SEP,
    SPECIAL_TOKENS,
    UNK,
    SentencePieceTokenizer,
    Tokenizer,
    WordPieceTokenizer,
)
from util import errors

# SentencePiece piece types (sentencepiece_model.proto, ModelProto.SentencePiece.Type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_UNIGRAM, _BPE = 1, 2  # TrainerSpec.ModelType


def _model_proto(tokenizer: SentencePieceTokenizer) -> Any:
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tokenizer.processor.serialized_model_proto())
    return proto


def _check_supported(proto: Any, path: pathlib.Path) -> None:
    """Refuses the SentencePiece settings the `tokenizers` pipeline below does not reproduce."""
    trainer, norm = proto.trainer_spec, proto.normalizer_spec
    unsupported = []
    if trainer.model_type not in (_UNIGRAM, _BPE):
        unsupported.append(f"model_type {trainer.model_type} (only unigram and bpe)")
    if not trainer.split_by_whitespace:
        unsupported.append("split_by_whitespace=false")
    if trainer.treat_whitespace_as_suffix:
        unsupported.append("treat_whitespace_as_suffix=true")
    if not norm.escape_whitespaces:
        unsupported.append("escape_whitespaces=false")
    if proto.denormalizer_spec.precompiled_charsmap:
        unsupported.append("a denormalizer")
    if any(p.type == _USER_DEFINED for p in proto.pieces):
        unsupported.append("user-defined symbols")
    if unsupported:
        raise errors.UserError(
            f"{path}: cannot express this SentencePiece model as a tokenizer.json: "
            + ", ".join(unsupported)
        )


def _normalizer(proto: Any) -> normalizers.Normalizer | None:
    """The model's character map, then its whitespace rules (squeeze runs, strip the ends)."""
    steps = []
    charsmap = proto.normalizer_spec.precompiled_charsmap
    if charsmap:
        steps.append(normalizers.Precompiled(charsmap))
    if proto.normalizer_spec.remove_extra_whitespaces:
        steps.append(normalizers.Replace(Regex(" {2,}"), " "))
        steps.append(normalizers.Strip(left=True, right=True))
    return normalizers.Sequence(steps) if steps else None


def _bpe_merges(pieces: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """Merges for an HF BPE model that applies SentencePiece's BPE rule: at each step the
    adjacent pair whose concatenation is the best-scoring piece is merged. A merge's rank is
    its result's rank by score."""
    merges = []
    for piece in pieces:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in pieces and right in pieces:
                merges.append((-scores[piece], pieces[piece], pieces[left], left, right))
    merges.sort()
    return [(left, right) for *_, left, right in merges]


def _sentencepiece_model(proto: Any) -> models.Model:
    byte_fallback = any(p.type == _BYTE for p in proto.pieces)
    unk_id = next(i for i, p in enumerate(proto.pieces) if p.type == _UNKNOWN)
    if proto.trainer_spec.model_type == _UNIGRAM:
        vocab = [(p.piece, p.score) for p in proto.pieces]
        return models.Unigram(vocab, unk_id=unk_id, byte_fallback=byte_fallback)
    pieces = {p.piece: i for i, p in enumerate(proto.pieces)}
    mergeable = {p.piece: i for i, p in enumerate(proto.pieces) if p.type == _NORMAL}
    scores = {p.piece: p.score for p in proto.pieces}
    return models.BPE(
        pieces,
        _bpe_merges(mergeable, scores),
        unk_token=proto.pieces[unk_id].piece,
        fuse_unk=True,
        byte_fallback=byte_fallback,
    )


def _post_processor(tokenizer: Tokenizer) -> processors.PostProcessor:
    """[CLS] a [SEP] (segment 0) and [CLS] a [SEP] b [SEP] (b and its [SEP] segment 1)."""
    return processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, tokenizer.cls_id), (SEP, tokenizer.sep_id)],
    )


def sentencepiece_to_tokenizers(tokenizer: SentencePieceTokenizer) -> hf_tokenizers.Tokenizer:
    """A `tokenizers.Tokenizer` that splits text into the SentencePiece model's ids."""
    proto = _model_proto(tokenizer)
    _check_supported(proto, tokenizer.path)
    hf = hf_tokenizers.Tokenizer(_sentencepiece_model(proto))
    normalizer = _normalizer(proto)
    if normalizer is not None:
        hf.normalizer = normalizer
    prepend = "always" if proto.normalizer_spec.add_dummy_prefix else "never"
    hf.pre_tokenizer = pre_tokenizers.Metaspace(SENTENCEPIECE_WORD_START, prepend, split=True)
    steps = [decoders.Metaspace(SENTENCEPIECE_WORD_START, prepend, split=True)]
    if any(p.type == _BYTE for p in proto.pieces):
        steps.insert(0, decoders.ByteFallback())
    hf.decoder = decoders.Sequence(steps)
    hf.add_special_tokens(
        [hf_tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    hf.post_processor = _post_processor(tokenizer)
    return hf


def _tokenizer_config(max_length: int, extra: dict, token_types: bool) -> dict[str, Any]:
    names = {"pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP}
    names["mask_token"] = MASK
    return {
        **extra,
        **names,
        "model_max_length": max_length,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": _input_names(token_types),
    }


def _wordpiece_settings(backend: hf_tokenizers.Tokenizer) -> dict[str, Any]:
    """BertTokenizerFast's settings, as the tokenizer's own BertNormalizer has them (that
    class rebuilds the normaliser when tokenizer_config.json disagrees with it)."""
    normalizer = json.loads(backend.to_str()).get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        return {"tokenizer_class": "PreTrainedTokenizerFast"}
    return {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": normalizer["lowercase"],
        "strip_accents": normalizer["strip_accents"],
        "tokenize_chinese_chars": normalizer["handle_chinese_chars"],
    }


def _write_vocab_txt(
    tokenizer: WordPieceTokenizer, backend: hf_tokenizers.Tokenizer, path: pathlib.Path
) -> None:
    """Google's vocab.txt as it was read (line numbers are ids), or one from a tokenizer.json."""
    if tokenizer.path.suffix == ".txt":
        shutil.copyfile(tokenizer.path, path)
        return
    vocab = sorted(backend.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    path.write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")


def _input_names(token_types: bool) -> list[str]:
    """tokenizer_config's model_input_names: token_type_ids only for a model that takes them."""
    return ["input_ids", *(["token_type_ids"] if token_types else []), "attention_mask"]


def _write_bpe(
    tokenizer: BpeTokenizer, directory: pathlib.Path, max_length: int, token_types: bool | None
) -> list[str]:
    """A tokenizer.json other than WordPiece as it was read, with the tokenizer_config.json that
    was beside it (else one naming the file's special tokens) and its special_tokens_map.json."""
    shutil.copyfile(tokenizer.path, directory / "tokenizer.json")
    beside = tokenizer.path.parent / "tokenizer_config.json"
    try:
        config = json.loads(beside.read_text(encoding="utf-8")) if beside.is_file() else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise errors.UserError(f"{beside} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise errors.UserError(f"{beside} is not a JSON object")
    if not config:
        ids = tokenizer.special_ids
        names = {"pad": ids.pad, "unk": ids.unk, "cls": ids.cls, "sep": ids.sep, "mask": ids.mask}
        config = {f"{k}_token": tokenizer.id_to_token(v) for k, v in names.items()}
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        if token_types is None:  # the post-processor's pair template decides
            token_types = set(tokenizer.build_inputs([7], [7])[1]) != {0}
    if token_types is not None:
        config["model_input_names"] = _input_names(token_types)
    config["model_max_length"] = max_length
    special = {k: v for k, v in config.items() if k.endswith("_token")}
    for name, value in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
        (directory / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def write_tokenizer(
    tokenizer: Tokenizer,
    directory: pathlib.Path,
    max_length: int,
    *,
    token_types: bool | None = None,
) -> list[str]:
    """Writes HF tokenizer files for `tokenizer` into `directory`; returns their names.

    Args:
      max_length: the model's longest input (tokenizer_config's model_max_length).
      token_types: whether the model takes token_type_ids (False for ModernBERT, whose
        forward refuses them): tokenizer_config's model_input_names. None: yes, except for a
        tokenizer.json other than WordPiece, whose own tokenizer_config.json (or, without one,
        its post-processor's type ids) decides.
    """
    if isinstance(tokenizer, BpeTokenizer):
        return _write_bpe(tokenizer, directory, max_length, token_types)
    if isinstance(tokenizer, SentencePieceTokenizer):
        backend = sentencepiece_to_tokenizers(tokenizer)
        extra = {"tokenizer_class": "PreTrainedTokenizerFast"}
        shutil.copyfile(tokenizer.path, directory / "sentencepiece.model")
        written = ["sentencepiece.model"]
    elif isinstance(tokenizer, WordPieceTokenizer):
        backend = hf_tokenizers.Tokenizer.from_str(tokenizer.backend.to_str())
        backend.post_processor = _post_processor(tokenizer)
        extra = _wordpiece_settings(backend)
        _write_vocab_txt(tokenizer, backend, directory / "vocab.txt")
        written = ["vocab.txt"]
    else:
        raise TypeError(f"no HF form for {type(tokenizer).__name__}")
    backend.save(str(directory / "tokenizer.json"))
    config = _tokenizer_config(max_length, extra, token_types is not False)
    special = {k: v for k, v in config.items() if k.endswith("_token")}
    for name, value in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
        (directory / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    return [*written, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
