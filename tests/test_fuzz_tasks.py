"""Fuzzing the fine-tuning readers (GLUE TSV, SQuAD JSON, CoNLL, STS) with seeded mutations of
slices of the real files in ../shared/data: every case is a UserError naming the file, or a
parse that passes a sanity check; never another exception type, never a hang (tests/fuzz.py)."""

import csv
import io
import json
import random
import re
import zlib

import pytest

from bert.tasks import glue, ner, squad, sts
from configs import squad as squad_config
from tests import fuzz

CASES = 300  # per reader


def _head(path, lines: int) -> bytes:
    with open(path, "rb") as f:
        return b"".join(f.readline() for _ in range(lines))


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") + 1


def _reference_rows(data: bytes) -> list[list[str]]:
    """The csv module's rows over Python's own text decoding and line splitting."""
    text = io.StringIO(data.decode("utf-8-sig"), newline="")
    return list(csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.mark.parametrize(
    ("task", "folder", "name"),
    [
        ("sst2", "SST-2", "dev.tsv"),
        ("mrpc", "MRPC", "dev.tsv"),
        ("stsb", "STS-B", "dev.tsv"),
        ("sst2", "SST-2", "test.tsv"),
    ],  # fmt: skip
)
def test_glue_tsv(shared_data, tmp_path, task, folder, name):
    spec = glue.get_task(task)
    base = _head(shared_data / "glue" / folder / name, 40)
    labeled = name != "test.tsv"

    def read(path):
        return glue.read_examples(task, path), glue.read_tsv(path)

    layout = spec.labeled if labeled else spec.unlabeled

    def check(result, data):
        examples, rows = result
        assert rows == _reference_rows(data)
        assert len(examples) <= _line_count(data)
        # Silent class: every data row is an example, its texts from their own columns.
        header, body = rows[0], [r for r in rows[1:] if r not in ([], [""])]
        assert len(examples) == len(body)
        for e, row in zip(examples, body, strict=True):
            assert len(row) == len(header)
            assert e.text_a == row[header.index(layout.text_columns[0])], (e, row)
        for e in examples:
            texts = [e.text_a] + ([e.text_b] if spec.is_pair else [])
            assert all(isinstance(t, str) and not set(t) & set("\n\r\t") for t in texts), e
            if not labeled:
                assert e.label is None and isinstance(e.index, str), e
            elif spec.is_regression:
                assert fuzz.is_finite(e.label), e
            else:
                assert e.label in spec.labels, e

    report = fuzz.run_cases(base, read, check, tmp_path, name,
                            CASES, seed=zlib.crc32(f"{task}{name}".encode()) % 1000)  # fmt: skip
    report.assert_clean(f"GLUE {task} {name}")


def _squad_slice(shared_data) -> bytes:
    """The first two paragraphs of the first article of SQuAD v1.1 dev, in the official shape."""
    data = json.loads((shared_data / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))
    article = dict(data["data"][0], paragraphs=data["data"][0]["paragraphs"][:2])
    return json.dumps({"data": [article], "version": data["version"]}, ensure_ascii=False).encode()


@pytest.mark.parametrize("is_training", [True, False])
def test_squad_json(shared_data, tmp_path, is_training):
    base = _squad_slice(shared_data)

    def check(result, data):
        assert isinstance(result, squad.SquadSet) and isinstance(result.version, str)
        for e in result.examples:
            assert all(isinstance(v, str) for v in (e.qid, e.question, e.context, e.title)), e
            assert (e.question + e.context).encode("utf-8"), e  # no lone surrogate
            for answer in e.answers:
                assert isinstance(answer.text, str) and isinstance(answer.start, int), e
            if is_training and not e.is_impossible:
                (answer,) = e.answers
                assert answer.start >= 0, e
                assert e.context[answer.start : answer.start + len(answer.text)] == answer.text
        # Silent class: every question is an example or named among the skipped.
        questions = [q["id"] for a in json.loads(data)["data"] for p in a["paragraphs"]
                     for q in p["qas"]]  # fmt: skip
        assert sorted([e.qid for e in result.examples] + result.skipped) == sorted(questions)
        assert not result.skipped or is_training

    mutations = (*fuzz.BYTE_MUTATIONS, *[fuzz.json_structure] * 6, *[fuzz.json_surrogate] * 2)
    report = fuzz.run_cases(base, lambda p: squad.read_squad(p, is_training=is_training), check,
                            tmp_path, "dev.json", CASES, seed=11 + is_training,
                            mutations=mutations)  # fmt: skip
    report.assert_clean("SQuAD")


def test_conll(shared_data, tmp_path):
    base = _head(shared_data / "conll2003" / "valid.txt", 120)

    def check(sentences, data):
        for s in sentences:
            assert s.words and len(s.words) == len(s.tags), s
            assert all(w and not any(c.isspace() for c in w) for w in s.words), s
            previous = ner.OUTSIDE
            for tag in s.tags:
                assert tag == ner.OUTSIDE or tag[:2] in ("B-", "I-") and len(tag) > 2, s
                assert not tag.startswith("I-") or previous[2:] == tag[2:], s
                previous = tag
        # Silent class: every token line is a word of a sentence, in order.
        lines = re.split(r"\r\n|\r|\n", data.decode("utf-8-sig"))  # the reader's line ends
        tokens = [f[0] for f in map(str.split, lines) if f and f[0] != "-DOCSTART-"]
        assert [w for s in sentences for w in s.words] == tokens

    report = fuzz.run_cases(base, ner.read_conll, check, tmp_path, "valid.txt", CASES, seed=21)
    report.assert_clean("CoNLL")


def test_sts_benchmark(shared_data, tmp_path):
    base = _head(shared_data / "stsbenchmark" / "sts-dev.csv", 40)

    def check(pairs, data):
        assert len(pairs) <= _line_count(data)
        for p in pairs:
            assert isinstance(p.sentence1, str) and isinstance(p.sentence2, str), p
            assert fuzz.is_finite(p.score) and 0 <= p.score <= sts.MAX_SCORE, p
        # Silent class: every row is a pair, its sentences from columns 5 and 6.
        rows = [r for r in _reference_rows(data) if r not in ([], [""])]
        assert [(p.sentence1, p.sentence2) for p in pairs] == [(r[5], r[6]) for r in rows]

    report = fuzz.run_cases(base, sts.read_sts_benchmark, check, tmp_path, "sts-dev.csv", CASES,
                            seed=31)  # fmt: skip
    report.assert_clean("STS benchmark")


def test_mutations_are_seeded():
    """The same seed gives the same case (a failure's seed replays it)."""
    data = b"a\tb\nc\td\n" * 10
    assert fuzz.mutate(data, random.Random(5)) == fuzz.mutate(data, random.Random(5))


def test_sts_encode_input(shared_data, tmp_path):
    """The sentences file of the STS job's encode mode (one sentence per line, row i = line i)."""
    from bert.jobs import sts as sts_job  # noqa: PLC0415 (the job module loads JAX)

    rows = _head(shared_data / "stsbenchmark" / "sts-dev.csv", 40).decode().splitlines()
    base = "".join(row.split("\t")[5] + "\n" for row in rows).encode()

    def check(sentences, data):  # Python's own decoding and universal newlines as reference
        expected = io.StringIO(data.decode("utf-8-sig"), newline=None).read().split("\n")
        assert sentences == (expected[:-1] if expected[-1] == "" else expected)

    report = fuzz.run_cases(base, lambda p: sts_job.read_sentences(str(p)), check, tmp_path,
                            "sentences.txt", CASES, seed=32)  # fmt: skip
    report.assert_clean("STS encode input")


def test_squad_job_reads_a_byte_order_mark_as_read_squad_does(shared_data, tmp_path):
    from bert.jobs import squad as squad_job  # noqa: PLC0415 (the job module loads JAX)

    base = _squad_slice(shared_data)
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + base)
    (tmp_path / "plain.json").write_bytes(base)
    config = squad_config.get_config()
    with_bom = squad_job.read(str(tmp_path / "bom.json"), "train_file", True, 0, config)
    plain = squad_job.read(str(tmp_path / "plain.json"), "train_file", True, 0, config)
    assert with_bom[1] == plain[1] == json.loads(base)
    assert with_bom[0].examples == plain[0].examples and plain[0].examples
