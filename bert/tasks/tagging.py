"""A user's tagged files for token classification (configs/tag.py): CoNLL-style columns or JSON
Lines, any tag set in IOB1, IOB2 or IOBES, read into `ner.Sentence`s.

* CoNLL: one token per line, its tag in `tag_column`, a blank line between sentences
  (`ner.read_conll`); MSRA's one character and its tag per line is this layout.
* JSONL: one sentence per line, an object whose `tokens` field is a list of tokens or a string,
  read as its characters (text written without spaces, such as Chinese), and whose `tags` field
  lists one tag per token.

The format is the one `file_format` names, or with "auto" jsonl for a ``.jsonl`` name (also
compressed) and conll for any other.
"""

import os
from collections.abc import Sequence

from absl import logging

from bert.tasks import ner, table_files
from util import paths
from util.errors import UserError

FORMATS = ("auto", "conll", "jsonl")
TAG_ERRORS = ("stop", "repair")  # what a tag out of its scheme's place does (configs/tag.py)
HINT = "; config.tag_errors=repair reads such tags so"  # ends the message of such a tag


def _format(path: paths.Path, file_format: str) -> str:
    if file_format not in FORMATS:
        raise UserError(f"config.file_format={file_format!r}: expected one of {', '.join(FORMATS)}")
    if file_format != "auto":
        return file_format
    name = os.fspath(path)
    name = next((name[: -len(c)] for c in table_files.COMPRESSIONS if name.endswith(c)), name)
    return "jsonl" if name.endswith(".jsonl") else "conll"


def _tokens(value, where: str, field: str) -> list[str]:
    if isinstance(value, str):
        return list(value)  # characters
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise UserError(f"{where}: {field!r} must be a list of non-empty strings or a string "
                        f"(its characters), got {str(value)[:80]}")  # fmt: skip
    return value


def _read_jsonl(
    path: paths.Path, fields: Sequence[str], scheme: str, repaired: list[str] | None
) -> list[ner.Sentence]:
    sentences = []
    for where, (tokens, tags) in table_files.read_rows(path, fields, "jsonl"):
        tokens = _tokens(tokens, where, fields[0])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise UserError(f"{where}: {fields[1]!r} must be a list of tags (strings)")
        if len(tags) != len(tokens):
            raise UserError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
        if not tokens:
            continue
        tags = list(tags)
        for i, tag in enumerate(tags):
            at = f"{where}: token {i}"
            tags[i] = ner.check_tag(tag, tags[i - 1] if i else ner.OUTSIDE, at, scheme,
                                    repaired is not None, HINT)  # fmt: skip
            if tags[i] != tag:
                repaired.append(at)
        ner.check_tag(None, tags[-1], f"{where}: token {len(tags) - 1}", scheme)
        sentences.append(ner.Sentence(tokens, tags))
    return sentences


def read_tagged(
    patterns: str,
    file_format: str = "auto",
    tag_column: int = -1,
    scheme: str = "iob2",
    fields: Sequence[str] = ("tokens", "tags"),
    tag_errors: str = "stop",
) -> list[ner.Sentence]:
    """The sentences of the files `patterns` (comma-separated globs), in order.

    Args:
      file_format: auto, conll or jsonl (see the module's docstring).
      tag_column: CoNLL: the tag's column from 0 (the token); -1 the last.
      scheme: iob1, iob2 or iobes (`ner.check_tag` says what each allows).
      fields: JSONL: the tokens' and the tags' keys.
      tag_errors: "stop": a tag out of the scheme's place raises; "repair" (iob1, iob2): an
        entity started with the other prefix (MSRA's ``O I-PER``) is read as conlleval reads
        it, as the scheme writes it (``O B-PER``); one warning counts them.

    Raises:
      UserError: no file, a malformed line or a tag the scheme does not allow there, naming
        the file and line.
    """
    if scheme not in ner.SCHEMES:
        raise UserError(f"config.tag_scheme={scheme!r}: expected one of {', '.join(ner.SCHEMES)}")
    if tag_errors not in TAG_ERRORS or tag_errors == "repair" and scheme == "iobes":
        raise UserError(f"config.tag_errors={tag_errors!r}: expected stop, or repair with the "
                        "tag scheme iob1 or iob2")  # fmt: skip
    repaired = [] if tag_errors == "repair" else None
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    sentences = []
    for path in paths.expand_all(globs, "tagged data"):
        if _format(path, file_format) == "jsonl":
            sentences += _read_jsonl(path, fields, scheme, repaired)
        else:
            sentences += ner.read_conll(path, tag_column=tag_column, scheme=scheme,
                                        repaired=repaired, hint=HINT)  # fmt: skip
    if repaired:
        logging.warning("%d tags out of %s's place read as conlleval reads them (the first at %s)",
                        len(repaired), scheme.upper(), repaired[0])  # fmt: skip
    return sentences
