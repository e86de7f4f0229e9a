"""Fuzzing the pre-training corpus readers (text, paragraphs, JSON Lines, WikiExtractor, Parquet;
plain and .gz/.bz2/.xz/.zst) with seeded mutations of real Wikipedia articles from ../shared/data:
every case is a UserError naming the file, or documents that pass a sanity check with the bad
lines counted when the reader was told to replace or skip them (tests/fuzz.py)."""

import bz2
import gzip
import io
import json
import lzma
import random
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from input_pipeline import corpora
from tests import fuzz

pytestmark = pytest.mark.full  # the full tier (tests/conftest.py)

CASES = 300  # per format
ARTICLES = 4  # real articles in each base file
COMPRESSED_MUTATIONS = (fuzz.truncate, fuzz.flip, fuzz.insert, fuzz.delete, fuzz.garbage)


@pytest.fixture(scope="module")
def articles(shared_data) -> list[tuple[str, list[str]]]:
    """(WikiExtractor lines, paragraphs) of the first real articles of one file."""
    found, current = [], []
    with open(shared_data / "wikipedia" / "AA" / "wiki_03", encoding="utf-8") as f:
        for line in f:
            current.append(line)
            if line.startswith("</doc>"):
                found.append((current, [p.strip() for p in current[2:-1] if p.strip()]))
                current = []
                if len(found) == ARTICLES:
                    return [("".join(lines), paragraphs) for lines, paragraphs in found]
    raise AssertionError("too few articles")


def _base(articles, fmt: str) -> bytes:
    if fmt == "wikiextractor":
        return "".join(lines for lines, _ in articles).encode()
    if fmt == "jsonl":
        rows = [json.dumps({"id": i, "text": "\n".join(p)}) for i, (_, p) in enumerate(articles)]
        return ("\n".join(rows) + "\n").encode()
    return "\n\n".join("\n".join(p) for _, p in articles).encode()  # text, paragraphs


def _errors_for(data: bytes) -> str:
    """A case's `errors` rule, fixed by its bytes (so a replayed case uses the same)."""
    return corpora.ERRORS[zlib.crc32(data) % len(corpora.ERRORS)]


def _reader(fmt: str, compressed: bool = False):
    def read(path):
        errors = _errors_for(path.read_bytes())
        stats = corpora.CorpusStats()
        documents = list(corpora.read_corpus(str(path), fmt, errors=errors, stats=stats))
        return documents, stats, errors

    def check(result, data):
        documents, stats, errors = result
        assert stats.documents == len(documents) and stats.files == 1
        for document in documents:
            assert document and all(isinstance(s, str) and s.strip() for s in document)
            assert all(s.encode("utf-8") for s in document)  # no lone surrogate
        if compressed:
            return
        if fmt == "text":  # silent class: every non-blank line is a sentence, or counted
            lines = [raw.decode("utf-8", "replace").rstrip("\r\n") for raw in data.split(b"\n")]
            lines[0] = lines[0].removeprefix("\ufeff")
            written = sum(1 for line in lines if line and not line.isspace())
            assert sum(map(len, documents)) == written - stats.skipped_lines, stats
        try:
            data.decode("utf-8")
            if fmt == "jsonl":  # a "\ud800" escape in JSON is as bad as invalid UTF-8
                texts = [json.loads(line)["text"] for line in data.splitlines() if line.strip()]
                "".join(texts).encode("utf-8")
        except UnicodeError:  # bad lines are counted under the rule asked for
            counted = {"replace": stats.replaced_lines, "skip": stats.skipped_lines}
            assert errors != "strict" and counted[errors] > 0, (errors, stats)
        else:
            assert stats.replaced_lines == stats.skipped_lines == 0, stats

    return read, check


def _jsonl_structure(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """`fuzz.json_structure` on one line of a JSON Lines file."""
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    lines[i], what = fuzz.json_structure(lines[i], rng)
    return b"\n".join(lines), f"line {i + 1}: {what}"


def _jsonl_surrogate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A lone surrogate escape ("\\udc80": half a character, as a cut emoji leaves it) in the text
    of one line of a JSON Lines file."""
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    try:
        record = json.loads(lines[i])
        at = rng.randrange(len(record["text"]) + 1)
        record["text"] = record["text"][:at] + rng.choice("\ud83d\udc80") + record["text"][at:]
    except (ValueError, KeyError, TypeError):
        return fuzz.flip(data, rng)
    lines[i] = json.dumps(record).encode()
    return b"\n".join(lines), f"line {i + 1}: a lone surrogate at character {at}"


@pytest.mark.parametrize("fmt", ["text", "paragraphs", "jsonl", "wikiextractor"])
def test_text_formats(articles, tmp_path, fmt):
    read, check = _reader(fmt)
    json_mutations = (_jsonl_structure,) * 4 + (_jsonl_surrogate,) * 2
    mutations = fuzz.BYTE_MUTATIONS + (json_mutations if fmt == "jsonl" else ())
    report = fuzz.run_cases(_base(articles, fmt), read, check, tmp_path, f"corpus.{fmt}", CASES,
                            seed=zlib.crc32(fmt.encode()) % 1000, mutations=mutations)  # fmt: skip
    report.assert_clean(fmt)


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as f:
        f.write(data)
    return sink.getvalue().to_pybytes()


COMPRESSORS = {  # the fastest levels: the streams are as valid, and the cases run quicker
    ".gz": lambda data: gzip.compress(data, compresslevel=1),
    ".bz2": lambda data: bz2.compress(data, compresslevel=1),
    ".xz": lambda data: lzma.compress(data, preset=0),
    ".zst": _zstd,
}


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
def test_compressed(articles, tmp_path, suffix):
    """A damaged compressed stream (cut, flipped, garbage) is a UserError naming the file."""

    def make(base: bytes, rng: random.Random) -> tuple[bytes, str]:
        text, what = fuzz.mutate(base, rng) if rng.random() < 0.3 else (base, "text intact")
        data = COMPRESSORS[suffix](text)
        if rng.random() < 0.8:
            data, damage = fuzz.mutate(data, rng, COMPRESSED_MUTATIONS)
            what += f"; compressed, then {damage}"
        return data, what

    read, check = _reader("wikiextractor", compressed=True)
    report = fuzz.run_cases(_base(articles, "wikiextractor"), read, check, tmp_path,
                            f"wiki_03{suffix}", CASES // 2, seed=zlib.crc32(suffix.encode()) % 1000,
                            make=make)  # fmt: skip
    report.assert_clean(suffix)


def _parquet(articles, rng: random.Random) -> tuple[bytes, str]:
    """A real Parquet file of the articles (one per row, two rows per row group), sometimes
    with the text in another column or of another type."""
    texts = ["\n".join(p) for _, p in articles]
    column, values, what = "text", texts, "parquet"
    roll = rng.random()
    if roll < 0.05:
        column, what = "body", "parquet, text column named 'body'"
    elif roll < 0.1:
        values, what = [len(t) for t in texts], "parquet, text column of integers"
    elif roll < 0.15:
        values, what = [t.encode("latin-1", "replace") for t in texts], "parquet, latin-1 bytes"
        values = pa.array(values, pa.binary()).cast(pa.string(), safe=False)
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": list(range(len(texts))), column: values}), sink,
                   row_group_size=2)  # fmt: skip
    data = sink.getvalue()
    if rng.random() < 0.8:
        data, damage = fuzz.mutate(data, rng, COMPRESSED_MUTATIONS)
        what += f"; {damage}"
    return data, what


def test_parquet(articles, tmp_path):
    read, check = _reader("parquet", compressed=True)
    report = fuzz.run_cases(b"", read, check, tmp_path, "train-0.parquet", CASES, seed=41,
                            make=lambda _, rng: _parquet(articles, rng))  # fmt: skip
    report.assert_clean("parquet")
