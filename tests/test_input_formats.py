"""Input formats: Parquet, CSV and compressed JSON Lines prepare exactly like plain JSON Lines;
Parquet reads a row group at a time; malformed files and Beam-only TFDS data sets are clear
user errors."""

import csv
import gzip
import json
import pathlib
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from input_pipeline import corpora, prepare, records, tfds_corpus, tokenizers
from util.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
WIKI_FILES = ["wiki_07", "wiki_45"]


def _vocab(data: pathlib.Path) -> pathlib.Path:
    return data / "vocab" / "bert-base-uncased-vocab.txt"


def _write_zst(plain: pathlib.Path, out: pathlib.Path) -> None:
    """With the zstd tool where installed (an independent writer), else pyarrow's codec."""
    if shutil.which("zstd"):
        subprocess.run(["zstd", "-q", "-f", str(plain), "-o", str(out)], check=True)
    else:
        with pa.CompressedOutputStream(str(out), "zstd") as f:
            f.write(plain.read_bytes())


def _write_corpus(rows: list[dict], folder: pathlib.Path) -> dict[str, tuple[str, str]]:
    """The same rows in two files per format: {name: (glob, format)}."""
    folder.mkdir()
    halves = [rows[: len(rows) // 2], rows[len(rows) // 2 :]]
    for i, half in enumerate(halves):
        table = pa.table({"id": [r["id"] for r in half], "text": [r["text"] for r in half]})
        if i == 1:  # both string layouts HF writes
            table = table.cast(pa.schema([("id", pa.string()), ("text", pa.large_string())]))
        pq.write_table(table, folder / f"part-{i}.parquet", row_group_size=40)
        plain = folder / f"part-{i}.jsonl"
        plain.write_text("".join(json.dumps(r) + "\n" for r in half), encoding="utf-8")
        _write_zst(plain, folder / f"part-{i}.jsonl.zst")
        with gzip.open(folder / f"part-{i}.jsonl.gz", "wb") as f:
            f.write(plain.read_bytes())
        with open(folder / f"part-{i}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)  # quotes the texts' commas, quotes and newlines
            writer.writerows([["id", "text"], *([r["id"], r["text"]] for r in half)])
    return {
        "csv": (str(folder / "part-*.csv"), "csv"),
        "parquet": (str(folder / "part-*.parquet"), "parquet"),
        "jsonl": (str(folder / "part-*.jsonl"), "jsonl"),
        "jsonl.zst": (str(folder / "part-*.jsonl.zst"), "jsonl"),
        "jsonl.gz": (str(folder / "part-*.jsonl.gz"), "jsonl"),
    }


def _decoded(manifest: prepare.Manifest) -> list[dict[str, list[int]]]:
    """Every record, in reading order (document i is record i // n of shard i % n)."""
    shards = [
        list(tf.data.TFRecordDataset(str(p)).as_numpy_iterator()) for p in manifest.shard_paths
    ]
    n, total = len(shards), sum(map(len, shards))
    return [
        {k: v.tolist() for k, v in records.decode_document(shards[i % n][i // n]).items()}
        for i in range(total)
    ]


def test_parquet_and_compressed_jsonl_prepare_like_jsonl(shared_data, tmp_path):
    wiki = [str(shared_data / "wikipedia" / "AA" / name) for name in WIKI_FILES]
    paragraphs = list(corpora.read_corpus(wiki, "wikiextractor", sentence_split=False))
    rows = [{"id": str(i), "text": "\n".join(p)} for i, p in enumerate(paragraphs)]
    rows.insert(3, {"id": "blank", "text": " \n "})  # skipped in every format alike
    inputs = _write_corpus(rows, tmp_path / "corpus")
    manifests = {
        name: prepare.prepare(pattern, tmp_path / name, fmt, _vocab(shared_data), num_shards=3)
        for name, (pattern, fmt) in inputs.items()
    }
    shards = {name: [p.read_bytes() for p in m.shard_paths] for name, m in manifests.items()}
    for name in ("parquet", "jsonl.zst", "jsonl.gz", "csv"):
        assert shards[name] == shards["jsonl"], name  # byte-identical shards
        assert manifests[name].counts == manifests["jsonl"].counts
    assert manifests["parquet"].config["format"] == "parquet"
    assert manifests["parquet"].config["text_field"] == "text"
    assert manifests["parquet"].counts["skipped_documents"] == 1
    # And they hold the WikiExtractor documents, tokenized directly.
    documents = list(corpora.read_corpus(wiki, "wikiextractor"))
    tokenizer = tokenizers.load_tokenizer(_vocab(shared_data))
    got = _decoded(manifests["parquet"])
    assert len(got) == len(documents) == len(rows) - 1
    for record, document in zip(got, documents, strict=True):
        encodings = [e for e in tokenizer.encode_batch(document) if e.ids]
        assert record["token_ids"] == [t for e in encodings for t in e.ids]
        assert record["sentence_lengths"] == [len(e.ids) for e in encodings]


def test_csv_rows_and_bad_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = ["label,review", '1,"\ufeff房间很大。早餐不错！"', '0,"a, b ""c""\nd"', "", "0,"]
    path.write_text("\n".join(rows) + "\n", "utf-8")
    stats = corpora.CorpusStats()
    documents = list(corpora.read_corpus(path, "csv", text_field="review", stats=stats))
    assert documents == [["房间很大。", "早餐不错！"], ['a, b "c"', "d"]]
    assert stats.skipped_documents == 1  # the empty review
    with pytest.raises(UserError, match=r"reviews.csv:1: no column 'text' \(the header has"):
        list(corpora.read_corpus(path, "csv"))
    path.write_text("label,review\n1,fine\n2\n", "utf-8")
    with pytest.raises(UserError, match=r"reviews.csv:3: 1 fields, no 'review'"):
        list(corpora.read_corpus(path, "csv", text_field="review"))


def test_parquet_rows_fields_and_nulls(tmp_path):
    path = tmp_path / "rows.parquet"
    body = ["Para one. Second sentence.\n\nPara two.", None, "   ", "Only one.", "Only one."]
    table = pa.table({"body": body, "n": list(range(5))})
    table = table.set_column(0, "body", table.column("body").dictionary_encode())
    pq.write_table(table, path, row_group_size=2)
    assert pq.ParquetFile(path).num_row_groups == 3
    stats = corpora.CorpusStats()
    documents = list(corpora.read_corpus(str(path), "parquet", text_field="body", stats=stats))
    assert documents == [
        ["Para one.", "Second sentence.", "Para two."],
        ["Only one."],
        ["Only one."],
    ]
    assert (stats.files, stats.documents, stats.skipped_documents) == (1, 3, 2)
    whole = list(corpora.read_corpus(path, "parquet", text_field="body", sentence_split=False))
    assert whole[0] == ["Para one. Second sentence.", "Para two."]


def test_parquet_memory_is_bounded_by_a_row_group(tmp_path):
    path = tmp_path / "big.parquet"
    text = "A sentence of filler text for the memory test. " * 50  # 2.4 kB a row
    rows_per_group, groups = 100, 60  # 240 kB of text a row group, 14 MB in all
    writer = pq.ParquetWriter(path, pa.schema([("text", pa.string())]), compression="none")
    for g in range(groups):
        writer.write_table(pa.table({"text": [f"{g} {r} {text}" for r in range(rows_per_group)]}))
    writer.close()
    group_bytes = rows_per_group * len(text)
    peak = count = 0
    for _ in corpora.read_corpus(str(path), "parquet", sentence_split=False):
        count += 1
        peak = max(peak, pa.total_allocated_bytes())  # Arrow's buffers held at this row
    assert count == rows_per_group * groups
    assert peak < 4 * group_bytes, (peak, group_bytes)  # a whole-file read holds 60


def test_malformed_parquet_is_a_user_error(shared_data, tmp_path):
    not_parquet = tmp_path / "notes.parquet"
    not_parquet.write_text("just some text\n")
    with pytest.raises(UserError, match=r"notes\.parquet: not a readable Parquet file"):
        list(corpora.read_corpus(str(not_parquet), "parquet"))
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"content": ["Some text."], "text": [3]}), other)
    with pytest.raises(UserError, match=r"other\.parquet: column 'text' holds int64, not strings"):
        list(corpora.read_corpus(str(other), "parquet"))
    with pytest.raises(
        UserError, match=r"other\.parquet: no column 'body' \(columns: content, text\)"
    ):
        list(corpora.read_corpus(str(other), "parquet", text_field="body"))
    # The prepare CLI names the file and column in one line and writes no manifest.
    out = tmp_path / "out"
    args = [f"--input={other}", f"--output={out}", "--format=parquet", "--workers=0"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "input_pipeline.prepare",
            *args,
            f"--tokenizer={_vocab(shared_data)}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{other}: column 'text' holds int64, not strings" in result.stderr
    assert not (out / "manifest.json").exists()


def test_parquet_invalid_utf8_follows_errors(tmp_path):
    path = tmp_path / "latin1.parquet"
    raw = pa.array([b"Fine.", b"caf\xe9 au lait.", b"Last."], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"text": raw}), path)
    with pytest.raises(
        UserError, match=r"latin1\.parquet: invalid UTF-8 in row 1 \(from 0\) at byte offset 3"
    ):
        list(corpora.read_corpus(str(path), "parquet"))
    stats = corpora.CorpusStats()
    replaced = list(corpora.read_corpus(str(path), "parquet", errors="replace", stats=stats))
    assert replaced == [["Fine."], ["caf\ufffd au lait."], ["Last."]]
    assert (stats.replaced_lines, stats.skipped_lines) == (1, 0)
    stats = corpora.CorpusStats()
    skipped = list(corpora.read_corpus(str(path), "parquet", errors="skip", stats=stats))
    assert skipped == [["Fine."], ["Last."]]
    assert (stats.replaced_lines, stats.skipped_lines) == (0, 1)


@pytest.mark.parametrize("name", ["wikipedia/20230601.en", "wiki40b/en", "c4/en"])
def test_tfds_beam_builders_are_refused_with_what_to_pass(name, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(UserError, match="Apache Beam") as info:
        tfds_corpus.read_tfds(name, data_dir=tmp_path, download=True)
    assert "data.format=parquet" in str(info.value) and "hf://datasets/" in str(info.value)
    assert not list(tmp_path.iterdir())  # nothing was downloaded


def test_tfds_load_tries_gcs_without_a_data_dir(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    calls = []

    def load(name, **kwargs):
        calls.append(kwargs)
        raise tfds.core.registered.DatasetNotFoundError(name)

    monkeypatch.setattr(tfds, "load", load)
    for data_dir in (None, tmp_path):
        with pytest.raises(RuntimeError, match="TFDS could not load 'imdb_reviews'"):
            tfds_corpus.read_tfds("imdb_reviews", data_dir=data_dir)
    # TFDS refuses try_gcs beside an explicit data_dir
    assert [c["try_gcs"] for c in calls] == [True, False]


def test_pretraining_data_from_a_beam_data_set_is_the_user_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from configs import bert_base  # noqa: PLC0415
    from input_pipeline import data_setup  # noqa: PLC0415

    data = bert_base.get_config().data  # the whole section, as the job passes it
    data.input, data.tfds_name = "", "wiki40b/en"
    with pytest.raises(UserError, match="Apache Beam"):  # not hidden in a generic error
        data_setup.prepare_pretraining_data(data, tmp_path)
    assert not (tmp_path / "raw").exists() or not list((tmp_path / "raw").iterdir())
