"""Corpus preparation: records equal direct tokenization, idempotent, interruption-safe, errors."""

import fcntl
import itertools
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from input_pipeline import corpora, prepare, prepare_workers, records, sentence_splitter, tokenizers
from util.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
WIKI_FILES = ["wiki_00", "wiki_31", "wiki_62"]


def _vocab(data: pathlib.Path, cased: bool = False) -> pathlib.Path:
    return data / "vocab" / f"bert-base-{'cased' if cased else 'uncased'}-vocab.txt"


def _wiki(data: pathlib.Path, names: list[str]) -> list[str]:
    return [str(data / "wikipedia" / "AA" / name) for name in names]


def _read_records(manifest: prepare.Manifest) -> list[dict]:
    """The records in reading order (document i is record i // n of shard i % n)."""
    assert manifest.counts["documents_without_tokens"] == 0
    shards = [
        list(tf.data.TFRecordDataset(str(p)).as_numpy_iterator()) for p in manifest.shard_paths
    ]
    assert [len(s) for s in shards] == [s["documents"] for s in manifest.shards]
    total = sum(map(len, shards))
    n = len(shards)
    return [records.decode_document(shards[i % n][i // n]) for i in range(total)]


def _expected(tokenizer: tokenizers.Tokenizer, document: list[str]) -> dict[str, list[int]]:
    encodings = [e for e in tokenizer.encode_batch(document) if e.ids]
    return {
        "token_ids": [t for e in encodings for t in e.ids],
        "sentence_lengths": [len(e.ids) for e in encodings],
        "word_starts": [int(w) for e in encodings for w in e.word_starts],
    }


def _check_records(manifest: prepare.Manifest, documents: list[list[str]]) -> None:
    tokenizer = tokenizers.load_tokenizer(manifest.tokenizer_path)
    got = _read_records(manifest)
    assert len(got) == len(documents)
    for record, document in zip(got, documents, strict=True):
        assert {k: v.tolist() for k, v in record.items()} == _expected(tokenizer, document)
    assert manifest.counts["tokens"] == sum(len(r["token_ids"]) for r in got)


def _mtimes(directory: pathlib.Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(directory.iterdir())}


def _write_docs(path: pathlib.Path, documents: list[list[str]]) -> pathlib.Path:
    path.write_text("\n\n".join("\n".join(d) for d in documents) + "\n", encoding="utf-8")
    return path


SMALL = [
    ["The cat sat on the mat.", "It was happy."],
    ["Paris is the capital of France.", "It has museums.", "Many people visit it."],
    ["Short one."],
    ["A literal [SEP] in the text.", "And a [CLS] too."],  # not joined by [SEP] (see workers)
]


@pytest.fixture(scope="module")
def wiki(shared_data, tmp_path_factory):
    """Three real Wikipedia files prepared with two worker processes."""
    out = tmp_path_factory.mktemp("wiki")
    files = _wiki(shared_data, WIKI_FILES)
    manifest = prepare.prepare(
        files, out, "wikiextractor", _vocab(shared_data), num_shards=3, workers=2
    )
    return files, out, manifest


def test_records_equal_direct_tokenization(wiki, shared_data):
    files, out, manifest = wiki
    stats = corpora.CorpusStats()
    documents = list(corpora.read_corpus(files, "wikiextractor", stats=stats))
    _check_records(manifest, documents)
    counts = manifest.counts
    assert counts["documents"] == stats.documents == len(documents)
    assert counts["sentences"] == stats.sentences
    assert (counts["files"], counts["skipped_documents"]) == (3, stats.skipped_documents)
    assert manifest.fingerprint == tokenizers.load_tokenizer(_vocab(shared_data)).fingerprint()
    assert sorted(p.name for p in out.glob("*.tfrecord")) == [p.name for p in manifest.shard_paths]
    assert not list(out.glob(".*.tmp"))


def test_output_does_not_depend_on_workers_or_chunks(wiki, tmp_path, shared_data):
    files, out, manifest = wiki
    again = prepare.prepare(
        files,
        tmp_path,
        "wikiextractor",
        _vocab(shared_data),
        num_shards=3,
        workers=0,
        chunk_chars=40_000,
    )
    for ours, theirs in zip(again.shard_paths, manifest.shard_paths, strict=True):
        assert ours.read_bytes() == theirs.read_bytes()


def test_rerun_does_nothing(wiki, shared_data, caplog):
    files, out, manifest = wiki
    before = _mtimes(out)
    args = [f"--input={f}" for f in files]
    args += [f"--output={out}", "--format=wikiextractor", f"--tokenizer={_vocab(shared_data)}"]
    with caplog.at_level(logging.INFO):
        assert prepare.main([*args, "--num_shards=3"]) == 0
    assert "already prepared" in caplog.text
    assert _mtimes(out) == before
    assert prepare.is_complete(files, out, "wikiextractor", _vocab(shared_data), num_shards=3)
    assert prepare.load_manifest(out) == manifest


def test_changes_invalidate(shared_data, tmp_path):
    corpus = _write_docs(tmp_path / "a.txt", SMALL)
    out = tmp_path / "out"
    first = prepare.prepare(str(corpus), out, "text", _vocab(shared_data), num_shards=2, workers=0)
    assert first.counts["documents"] == 4
    check = {"num_shards": 2, "workers": 0}
    assert prepare.is_complete(str(corpus), out, "text", _vocab(shared_data), **check)
    # Another shard count: the old shards go, the new ones come.
    assert not prepare.is_complete(str(corpus), out, "text", _vocab(shared_data), num_shards=3)
    third = prepare.prepare(str(corpus), out, "text", _vocab(shared_data), num_shards=3, workers=0)
    assert sorted(p.name for p in out.glob("shard-*")) == [p.name for p in third.shard_paths]
    # Another tokenizer: another fingerprint, other ids.
    cased = prepare.prepare(str(corpus), out, "text", _vocab(shared_data, True), num_shards=3)
    assert cased.fingerprint != third.fingerprint
    _check_records(cased, SMALL)
    # Another input: changed content (size and time) is seen.
    _write_docs(corpus, [*SMALL, ["One more document."]])
    assert not prepare.is_complete(
        str(corpus), out, "text", _vocab(shared_data, True), num_shards=3
    )
    grown = prepare.prepare(str(corpus), out, "text", _vocab(shared_data, True), num_shards=3)
    assert grown.counts["documents"] == 5
    # A deleted shard is seen too.
    grown.shard_paths[0].unlink()
    assert not prepare.is_complete(
        str(corpus), out, "text", _vocab(shared_data, True), num_shards=3
    )


@pytest.mark.full
def test_interrupted_writer_leaves_no_manifest_and_is_redone(shared_data, tmp_path, monkeypatch):
    files = _wiki(shared_data, ["wiki_05"])
    out = tmp_path / "out"
    calls = itertools.count()
    real = prepare_workers.ChunkTokenizer.encode_chunk

    def failing(*args, **kwargs):
        if next(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_workers.ChunkTokenizer, "encode_chunk", failing)
    with pytest.raises(OSError, match="simulated"):
        prepare.prepare(
            files, out, "wikiextractor", _vocab(shared_data), workers=0, chunk_chars=100_000
        )
    assert not (out / "manifest.json").exists()
    assert not list(out.glob("*shard*"))
    assert not prepare.is_complete(files, out, "wikiextractor", _vocab(shared_data))
    monkeypatch.undo()
    manifest = prepare.prepare(files, out, "wikiextractor", _vocab(shared_data), workers=0)
    _check_records(manifest, list(corpora.read_corpus(files, "wikiextractor")))


@pytest.mark.full
def test_killed_run_is_redone(shared_data, tmp_path):
    files = _wiki(shared_data, ["wiki_10", "wiki_11", "wiki_12", "wiki_13"])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "input_pipeline.prepare", *[f"--input={f}" for f in files]]
    command += [f"--output={out}", "--format=wikiextractor", f"--tokenizer={_vocab(shared_data)}"]
    process = subprocess.Popen(
        [*command, "--workers=1"], cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob(".shard-*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and its workers
        process.wait()
    assert list(out.glob(".shard-*.tmp")), "the run was not caught while writing"
    assert not (out / "manifest.json").exists()
    # A stale finished-looking shard of another layout must not survive either.
    (out / "shard-00000-of-00007.tfrecord").write_bytes(b"stale")
    manifest = prepare.prepare(files, out, "wikiextractor", _vocab(shared_data), workers=0)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".prepare")) == sorted(
        ["manifest.json", *(p.name for p in manifest.shard_paths)]
    )
    _check_records(manifest, list(corpora.read_corpus(files, "wikiextractor")))


def test_cli_glob_matching_nothing(tmp_path):
    pattern = str(tmp_path / "nothing-here-*.txt")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "input_pipeline.prepare", f"--input={pattern}", f"--output={out}"]
        + ["--format=text", "--tokenizer=unused.txt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert pattern in result.stderr and "Traceback" not in result.stderr
    assert not (out / "manifest.json").exists()


def test_cli_invalid_utf8(shared_data, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"A fine sentence.\n\nAnother one.\nBroken \xff byte.\n")
    out = tmp_path / "out"
    args = [f"--input={bad}", f"--output={out}", "--format=text", "--workers=1"]
    assert prepare.main([*args, f"--tokenizer={_vocab(shared_data)}"]) == 2
    message = capsys.readouterr().err
    assert str(bad) in message and "byte offset 38" in message
    assert not (out / "manifest.json").exists() and not list(out.glob("*shard*"))


def test_empty_and_blank_files_are_counted(shared_data, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _write_docs(corpus / "a.txt", SMALL)
    (corpus / "b_empty.txt").write_text("")
    (corpus / "c_blank.txt").write_text("\n  \n\t\n\n")
    manifest = prepare.prepare(str(corpus / "*.txt"), tmp_path / "out", "text", _vocab(shared_data))
    assert manifest.counts["files"] == 3 and manifest.counts["skipped_files"] == 2
    assert manifest.counts["documents"] == 4
    _check_records(manifest, SMALL)


def test_sentencepiece_is_trained_when_no_tokenizer(shared_data, tmp_path):
    files = _wiki(shared_data, ["wiki_20"])
    out = tmp_path / "out"
    options = {"train_sentencepiece_vocab_size": 1000, "workers": 1, "num_shards": 2}
    manifest = prepare.prepare(files, out, "wikiextractor", **options)
    assert manifest.tokenizer_path == out / "sentencepiece.model"
    assert manifest.tokenizer["trained"] and manifest.tokenizer["vocab_size"] == 1000
    tokenizer = tokenizers.load_tokenizer(manifest.tokenizer_path)
    assert [tokenizer.token_to_id(t) for t in tokenizers.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tokenizer.fingerprint() == manifest.fingerprint
    _check_records(manifest, list(corpora.read_corpus(files, "wikiextractor")))
    before = _mtimes(out)
    assert prepare.prepare(files, out, "wikiextractor", **options) == manifest  # not retrained
    assert _mtimes(out) == before
    assert not prepare.is_complete(
        files, out, "wikiextractor", **{**options, "train_sentencepiece_vocab_size": 900}
    )


@pytest.mark.full
def test_ten_megabyte_document(shared_data, tmp_path):
    wiki = corpora.read_corpus(
        _wiki(shared_data, ["wiki_40"]), "wikiextractor", sentence_split=False
    )
    base = " ".join(itertools.chain.from_iterable(wiki))
    text = " ".join([base] * (1 + (10 << 20) // len(base)))[: 10 << 20].rstrip()
    path = tmp_path / "one.txt"
    path.write_text(text + "\n", encoding="utf-8")
    assert path.stat().st_size >= 10 << 20
    manifest = prepare.prepare(str(path), tmp_path / "out", "paragraphs", _vocab(shared_data))
    assert manifest.counts["documents"] == 1 and sum(s["documents"] for s in manifest.shards) == 1
    sentences = sentence_splitter.split_sentences(text)
    assert manifest.counts["sentences"] == len(sentences)
    _check_records(manifest, [sentences])


def test_a_second_run_on_the_same_folder_is_refused(shared_data, tmp_path):
    corpus = _write_docs(tmp_path / "a.txt", SMALL)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / prepare.LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another prepare run"):
            prepare.prepare(str(corpus), out, "text", _vocab(shared_data), workers=0)


def test_preparing_imports_no_tensorflow_or_jax():
    code = (
        "import sys, input_pipeline.prepare, input_pipeline.prepare_workers;"
        "print([m for m in ('tensorflow', 'jax', 'flax', 'optax') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def _children(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is `pid`, from /proc."""
    found = set()
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (pathlib.Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[
            0
        ] != "Z"
    except OSError:
        return False


@pytest.mark.full
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal")
def test_a_job_killed_while_preparing_leaves_no_workers_running(shared_data, tmp_path):
    wiki = shared_data / "wikipedia" / "AA"
    files = ",".join(str(wiki / f"wiki_{i:02d}") for i in range(20))
    code = ("import sys\nfrom input_pipeline import prepare\n"
            "prepare.prepare(sys.argv[1].split(','), sys.argv[2], 'wikiextractor', sys.argv[3], "
            "num_shards=4, workers=2, chunk_chars=1 << 16)")  # fmt: skip
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    args = [sys.executable, "-c", code, files, str(tmp_path / "out"), str(vocab)]
    job = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_children(job.pid)) < 2 and time.time() < deadline and job.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # the workers at work
    workers = _children(job.pid)
    assert len(workers) >= 2 and job.poll() is None, workers
    job.kill()
    job.wait()
    deadline = time.time() + 10
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)], "workers outlived the killed job"
