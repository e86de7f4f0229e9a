"""Bi-encoder data: pairs, triplets and scored pairs from TSV/CSV/JSONL/Parquet (against
pyarrow's and json's own parses), the STS benchmark, SQuAD question/passage pairs and the
split by article (against a direct walk of the JSON), BEIR retrieval files, and the errors."""

import bz2
import gzip
import json
import lzma

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from bert.tasks import pairs, retrieval_data, squad_pairs, sts
from util.errors import UserError

ROWS = [  # awkward texts: commas, quotes, tabs are not used (TSV), non-ASCII, a newline (CSV)
    {"anchor": 'He said "hello", then left.', "positive": "Café, naïve – ok", "negative": "x",
     "score": 4.5},
    {"anchor": "Plain anchor", "positive": "Plain positive", "negative": "y'z", "score": 0.0},
    {"anchor": '"Quoted" third?', "positive": "Ünïcödé ✓", "negative": 'neg "q"',
     "score": -1.25},
]  # fmt: skip


def write_csv(path, rows, columns):
    def quote(value):
        text = str(value)
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text

    lines = [",".join(columns)] + [",".join(quote(r[c]) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_tsv(path, rows, columns, header=True):
    lines = ["\t".join(columns)] if header else []
    lines += ["\t".join(str(r[c]) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_csv_with_quotes_and_newlines_equals_pyarrow(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[1]["positive"] = "two\nlines, quoted"
    path = tmp_path / "triplets.csv"
    write_csv(path, rows, ["anchor", "positive", "negative"])
    got = pairs.read_pairs(str(path), kind="triplets")
    table = pa_csv.read_csv(path, parse_options=pa_csv.ParseOptions(newlines_in_values=True))
    assert got.anchors == tuple(table["anchor"].to_pylist())
    assert got.positives == tuple(table["positive"].to_pylist())
    assert got.negatives == tuple(table["negative"].to_pylist())
    assert got.positives[1] == "two\nlines, quoted" and got.scores is None


def test_tsv_quoting_off_by_name_and_position_equals_pyarrow(tmp_path):
    path = tmp_path / "scored.tsv"
    write_tsv(path, ROWS, ["score", "negative", "anchor", "positive"])
    options = pa_csv.ParseOptions(delimiter="\t", quote_char=False)
    table = pa_csv.read_csv(path, parse_options=options)
    by_name = pairs.read_pairs(str(path), kind="scored", columns="anchor,positive,score")
    by_position = pairs.read_pairs(str(path), kind="scored", columns="2,3,0")
    assert by_name == by_position
    assert by_name.anchors == tuple(table["anchor"].to_pylist())  # quotes kept as they are
    assert by_name.scores == tuple(table["score"].to_pylist())
    no_header = tmp_path / "plain.tsv"
    write_tsv(no_header, ROWS, ["anchor", "positive"], header=False)
    got = pairs.read_pairs(str(no_header), columns=[0, 1], header=False)
    assert got.anchors == tuple(r["anchor"] for r in ROWS) and len(got) == 3


def test_jsonl_objects_and_arrays_equal_json(tmp_path):
    objects = tmp_path / "a.jsonl"
    objects.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n", encoding="utf-8")
    arrays = tmp_path / "b.jsonl"
    arrays.write_text("\n".join(json.dumps([r["score"], r["anchor"], r["positive"]])
                                for r in ROWS), encoding="utf-8")  # fmt: skip
    want = [json.loads(line) for line in objects.read_text().splitlines() if line]
    got = pairs.read_pairs(str(objects), kind="scored", columns="anchor,positive,score")
    assert got.anchors == tuple(w["anchor"] for w in want)
    assert got.scores == tuple(w["score"] for w in want)
    assert pairs.read_pairs(str(arrays), kind="scored", columns="1,2,0") == got
    triplets = pairs.read_pairs(str(objects), kind="triplets")
    assert triplets.negatives == tuple(w["negative"] for w in want)


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.xz", ".tsv.bz2"])
def test_compressed_files_equal_their_decompressed_parse(tmp_path, suffix):
    opener = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}[suffix[suffix.rindex(".") :]]
    path = tmp_path / f"triplets{suffix}"
    with opener(path, "wt", encoding="utf-8") as f:
        for r in ROWS:  # arrays, as sentence-transformers' embedding-training-data files
            values = [r["anchor"], r["positive"], r["negative"]]
            f.write((json.dumps(values) if "jsonl" in suffix else "\t".join(values)) + "\n")
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    want = [json.loads(line) if "jsonl" in suffix else line.split("\t") for line in lines]
    got = pairs.read_pairs(str(path), kind="triplets", columns="0,1,2", header=False)
    assert (got.anchors, got.positives, got.negatives) == tuple(zip(*want, strict=True))


def test_parquet_row_groups_equal_pyarrow(tmp_path):
    rows = ROWS * 7
    table = pa.table({key: [r[key] for r in rows] for key in ROWS[0]})
    path = tmp_path / "pairs.parquet"
    pq.write_table(table, path, row_group_size=4)
    assert pq.ParquetFile(path).num_row_groups > 1
    got = pairs.read_pairs(str(path), kind="scored", columns="positive,anchor,score")
    want = pq.read_table(path)
    assert got.anchors == tuple(want["positive"].to_pylist())
    assert got.positives == tuple(want["anchor"].to_pylist())
    assert got.scores == tuple(want["score"].to_pylist())
    assert pairs.read_pairs(str(path), kind="scored", columns="1,0,3") == got


def test_globs_concatenate_in_order(tmp_path):
    for i in range(3):
        write_tsv(tmp_path / f"part{i}.tsv", ROWS[i:], ["anchor", "positive"])
    got = pairs.read_pairs(str(tmp_path / "part*.tsv"))
    assert got.anchors == tuple(r["anchor"] for i in range(3) for r in ROWS[i:])


def test_sts_benchmark_layout_reuses_the_sts_reader(shared_data):
    folder = shared_data / "stsbenchmark"
    train = pairs.read_pairs(str(folder / "sts-train.csv"), "scored", file_format="stsbenchmark")
    dev = pairs.read_pairs(str(folder / "sts-dev.csv"), "scored", file_format="stsbenchmark")
    assert (len(train), len(dev)) == (5_749, 1_500)
    want = sts.read_sts_benchmark(folder / "sts-dev.csv")
    assert dev.anchors == tuple(p.sentence1 for p in want)
    assert dev.scores == tuple(p.score for p in want)
    glue = pairs.read_pairs(str(shared_data / "glue/STS-B/dev.tsv"), "scored",
                            file_format="glue_stsb")  # fmt: skip
    assert len(glue) == 1_500 and max(glue.scores) == 5.0


def squad_walk(path):
    """The official JSON walked directly: [(article, paragraph, question, qid, answers)]."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return [(a, p["context"], qa["question"], qa["id"], qa["answers"])
            for a, article in enumerate(data) for p in article["paragraphs"]
            for qa in p["qas"]]  # fmt: skip


def test_squad_pairs_and_article_split(shared_data):
    path = shared_data / "squad" / "dev-v1.1.json"
    walk = squad_walk(path)
    assert len(walk) == 10_570 and walk[-1][0] == 47
    paragraphs = pairs.read_pairs(str(path), file_format="squad")
    assert paragraphs.anchors == tuple(w[2] for w in walk)
    assert paragraphs.positives == tuple(w[1] for w in walk)
    sentences = pairs.read_pairs(str(path), file_format="squad", passage="sentence")
    assert len(sentences) + sentences.skipped == 10_570 and sentences.skipped == 0
    for (_, context, _, _, answers), sentence in zip(walk, sentences.positives, strict=True):
        assert sentence in context and answers[0]["text"] in sentence
    shorter = np.mean([len(s) < len(w[1]) for s, w in zip(sentences.positives, walk, strict=True)])
    assert shorter > 0.9  # most passages are one sentence, not the whole paragraph

    train, held = squad_pairs.split_by_article(path, held_out_articles=8)
    held_walk = [w for w in walk if w[0] >= 40]
    assert len(train) == len(walk) - len(held_walk)
    assert train.anchors == tuple(w[2] for w in walk if w[0] < 40)
    assert held.query_ids == tuple(w[3] for w in held_walk)
    want_corpus = list(dict.fromkeys((w[0], w[1]) for w in held_walk))
    assert held.corpus == tuple(c for _, c in want_corpus)
    for (article, context, *_), relevant in zip(held_walk, held.relevant, strict=True):
        assert held.corpus[relevant[0]] == context and len(relevant) == 1
        assert held.corpus_ids[relevant[0]].startswith(f"{article}/")
    assert not set(train.positives) & set(held.corpus)  # no held-out paragraph in training


def test_answer_sentence_spanning_a_cut():
    from bert.tasks.squad import Answer

    context = "First one here. Second part. Third."
    answer = Answer("here. Second", context.index("here"))
    assert squad_pairs.answer_sentence(context, answer) == "First one here. Second part."
    assert squad_pairs.answer_sentence(context, Answer("Third", 0)) == "Third."  # wrong offset
    assert squad_pairs.answer_sentence(context, Answer("absent", 3)) is None


def test_beir_reader(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(d) for d in [
        {"_id": "d1", "title": "T", "text": "one"}, {"_id": "d2", "text": "two"},
        {"_id": "d3", "title": "", "text": "three"}]))  # fmt: skip
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps({"_id": q, "text": f"query {q}"})
                                 for q in ("q1", "q2", "q3")))  # fmt: skip
    qrels = tmp_path / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq2\td3\t1\nq1\td2\t1\nq2\td1\t2\nq3\td1\t0\n")
    got = retrieval_data.read_beir(corpus, queries, qrels)
    assert got.query_ids == ("q1", "q2")  # q3 has no relevant document
    assert got.corpus == ("T one", "two", "three")
    assert got.relevant == ((1,), (0, 2))
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    with pytest.raises(UserError, match=r"test.tsv: query 'q1': document 'd9'"):
        retrieval_data.read_beir(corpus, queries, qrels)


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("anchor\tpositive\nok\t\n", {}, r"x.tsv:2: column 'positive' is empty"),
        ("anchor\tpos\nok\tok\n", {}, r"x.tsv:1: no column 'positive'"),
        ("a\tb\tscore\nx\ty\tn/a\n", {"kind": "scored", "columns": "a,b,score"},
         r"x.tsv:2: score column 'score' holds 'n/a'"),
        ("a\tb\tscore\nx\ty\tnan\n", {"kind": "scored", "columns": "0,1,2"},
         r"x.tsv:2: score column 2 is nan"),
        ("anchor\tpositive\nok\tok\nonly\n", {}, r"x.tsv:3: 1 fields"),
        ("x\ty\n", {"header": False}, r"column 'anchor' named but the file has no header"),
        ("a\tb\n", {"kind": "quads"}, r"pair kind 'quads'"),
        ("a\tb\n", {"columns": "a"}, r"pairs need 2 columns"),
    ],
)  # fmt: skip
def test_tsv_errors_name_file_and_line(tmp_path, content, kwargs, message):
    path = tmp_path / "x.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        pairs.read_pairs(str(path), **kwargs)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"anchor": "a", "positive": 3}', r"x.jsonl:2: column 'positive' holds int, not text"),
        ('{"anchor": "a"}', r"x.jsonl:2: no key 'positive'"),
        ("{broken", r"x.jsonl:2: not valid JSON"),
        ('["a", "b"]', r"x.jsonl:2: a JSON list cannot be read by column 'anchor'"),
    ],
)
def test_jsonl_errors(tmp_path, line, message):
    path = tmp_path / "x.jsonl"
    path.write_text('{"anchor": "a", "positive": "b"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=message):
        pairs.read_pairs(str(path))


def test_other_errors(tmp_path):
    with pytest.raises(UserError, match=r"no pairs data file matches"):
        pairs.read_pairs(str(tmp_path / "missing.tsv"))
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(UserError, match=r"bad.parquet: not a readable Parquet file"):
        pairs.read_pairs(str(bad))
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"anchor": ["a", None], "positive": ["b", "c"]}), nulls)
    with pytest.raises(UserError, match=r"nulls.parquet: row 1 \(from 0\): column 'anchor' holds"):
        pairs.read_pairs(str(nulls))
    odd = tmp_path / "data.txt"
    odd.write_text("a\tb\n")
    with pytest.raises(UserError, match=r"data.txt: cannot tell the format"):
        pairs.read_pairs(str(odd))
    with pytest.raises(UserError, match=r"squad files give pairs, not scored"):
        pairs.read_pairs(str(odd), kind="scored", file_format="squad")
