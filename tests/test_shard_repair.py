"""Prepared data verified and repaired at the smallest unit: a damaged or missing shard is
rewritten alone (byte-identical, the tokenizer untouched); changed inputs, or a damaged trained
tokenizer, still redo everything."""

import json
import logging
import pathlib
import shutil

import pytest
import tensorflow as tf

from input_pipeline import prepare, prepare_workers, record_encoder, tokenizers

WIKI = ["wiki_20"]
TRAINED = {"train_sentencepiece_vocab_size": 1000, "num_shards": 3, "workers": 0}
DAMAGED = 1  # the shard damaged in these tests


def _wiki(data: pathlib.Path, names: list[str]) -> list[str]:
    return [str(data / "wikipedia" / "AA" / name) for name in names]


def _vocab(data: pathlib.Path) -> pathlib.Path:
    return data / "vocab" / "bert-base-uncased-vocab.txt"


def _mtimes(directory: pathlib.Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """A corpus prepared with a SentencePiece model trained into the folder, and its bytes."""
    out = tmp_path_factory.mktemp("trained") / "out"
    files = _wiki(shared_data, WIKI)
    prepare.prepare(files, out, "wikiextractor", **TRAINED)
    return files, out, {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


@pytest.fixture
def copy(trained, tmp_path):
    """A fresh copy of the prepared folder (modification times kept), for one test to damage."""
    files, out, original = trained
    target = tmp_path / "out"
    shutil.copytree(out, target)  # copy2: times kept
    return files, target, original


def _damage(path: pathlib.Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # same size: only the checksum sees it
        path.write_bytes(data[:500] + bytes([data[500] ^ 0x10]) + data[501:])
    else:
        path.unlink()


def test_checksums_are_the_crc32c_of_the_shards(trained):
    files, out, original = trained
    manifest = prepare.load_manifest(out)
    reference = record_encoder.Crc32c()  # an independent implementation (numpy tables)
    for shard in manifest.shards:
        expected = int(reference([original[shard["name"]]])[0])
        assert shard["crc32c"] == f"{expected:08x}"
        assert shard["bytes"] == len(original[shard["name"]])


@pytest.mark.parametrize("how", ["truncated", "flipped", "deleted"])
def test_a_damaged_shard_is_rewritten_alone(copy, how, caplog, monkeypatch):
    files, out, original = copy
    manifest = prepare.load_manifest(out)
    damaged = manifest.shard_paths[DAMAGED]
    _damage(damaged, how)
    before = _mtimes(out)
    tokenized = []  # the documents given to the tokenizer
    real = prepare_workers.ChunkTokenizer.encode_chunk

    def counting(self, documents, *args, **kwargs):
        tokenized.extend(d for d in documents if d)
        return real(self, documents, *args, **kwargs)

    monkeypatch.setattr(prepare_workers.ChunkTokenizer, "encode_chunk", counting)
    with caplog.at_level(logging.INFO):
        repaired = prepare.prepare(files, out, "wikiextractor", **TRAINED)
    assert repaired == manifest  # the manifest is not rewritten either
    after = _mtimes(out)
    assert damaged.read_bytes() == original[damaged.name]  # byte-identical
    assert after.pop(damaged.name) != before.pop(damaged.name, None)
    assert after == before  # the other shards, the tokenizer and the manifest untouched
    assert (out / "sentencepiece.model").read_bytes() == original["sentencepiece.model"]
    assert len(tokenized) == manifest.shards[DAMAGED]["documents"]  # its documents only
    lines = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(lines) == 1 and damaged.name in lines[0] and "rewrote them alone" in lines[0]
    assert "training" not in caplog.text and "preparing" not in caplog.text
    assert not list(out.glob(".*.tmp"))


def test_a_flipped_byte_is_seen_by_the_checksum_not_by_the_size(copy):
    files, out, original = copy
    _damage(prepare.load_manifest(out).shard_paths[DAMAGED], "flipped")
    options = {k: v for k, v in TRAINED.items() if k != "workers"}
    assert prepare.is_complete(files, out, "wikiextractor", **options, verify="size")
    assert not prepare.is_complete(files, out, "wikiextractor", **options, verify="checksum")
    assert not prepare.is_complete(files, out, "wikiextractor", **options)  # the default
    args = [f"--input={files[0]}", f"--output={out}", "--format=wikiextractor", "--workers=0"]
    args += ["--train_sentencepiece_vocab_size=1000", "--num_shards=3"]
    before = _mtimes(out)
    assert prepare.main([*args, "--verify=size"]) == 0
    assert _mtimes(out) == before
    assert prepare.main(args) == 0
    shard = prepare.load_manifest(out).shard_paths[DAMAGED]
    assert shard.read_bytes() == original[shard.name]


def test_a_damaged_trained_tokenizer_redoes_everything(copy, caplog):
    """The shards are only as good as the tokenizer that made them, and a trained one can only
    be made again from the corpus: it is retrained and every shard rewritten."""
    files, out, original = copy
    model = out / "sentencepiece.model"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    before = _mtimes(out)
    with caplog.at_level(logging.INFO):
        manifest = prepare.prepare(files, out, "wikiextractor", **TRAINED)
    assert "training a 1000-piece SentencePiece model" in caplog.text
    assert "tokenizer" in next(r.getMessage() for r in caplog.records if "preparing" in r.msg)
    after = _mtimes(out)
    assert all(after[p.name] != before[p.name] for p in manifest.shard_paths)
    assert after["sentencepiece.model"] != before["sentencepiece.model"]
    assert manifest.fingerprint == tokenizers.load_tokenizer(model).fingerprint()


@pytest.fixture
def given(shared_data, tmp_path):
    """A corpus file of our own (so that it can change) prepared with a given vocab.txt."""
    corpus = tmp_path / "wiki_00"
    shutil.copy(_wiki(shared_data, ["wiki_00"])[0], corpus)
    out = tmp_path / "out"
    options = {"num_shards": 3, "workers": 0}
    manifest = prepare.prepare(str(corpus), out, "wikiextractor", _vocab(shared_data), **options)
    return corpus, out, manifest, options


def test_a_changed_input_still_redoes_everything(given, shared_data, caplog):
    corpus, out, manifest, options = given
    _damage(manifest.shard_paths[DAMAGED], "truncated")
    with corpus.open("a", encoding="utf-8") as f:
        f.write('<doc id="1" url="u" title="New">\nNew\n\nA new document.\n</doc>\n')
    before = _mtimes(out)
    with caplog.at_level(logging.INFO):
        grown = prepare.prepare(str(corpus), out, "wikiextractor", _vocab(shared_data), **options)
    assert "the input files differ" in caplog.text and "rewrote" not in caplog.text
    assert grown.counts["documents"] == manifest.counts["documents"] + 1
    after = _mtimes(out)
    assert all(after[p.name] != before[p.name] for p in grown.shard_paths)


def test_an_older_manifest_is_verified_record_by_record_and_gains_checksums(
    given, shared_data, caplog
):
    """A manifest written before checksums existed: each shard is checked against the CRC-32Cs
    of its records' own TFRecord framing (TensorFlow rejects the same bytes), a damaged one is
    rewritten alone, and every shard's checksum is added to the manifest."""
    corpus, out, manifest, options = given
    fields = json.loads((out / "manifest.json").read_text())
    for shard in fields["shards"]:
        del shard["crc32c"]
    (out / "manifest.json").write_text(json.dumps(fields))
    original = [p.read_bytes() for p in manifest.shard_paths]
    flipped = manifest.shard_paths[0]
    _damage(flipped, "flipped")  # the same size: only the records' own CRCs see it
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(flipped)))
    _damage(manifest.shard_paths[DAMAGED], "truncated")
    args = (str(corpus), out, "wikiextractor", _vocab(shared_data))
    assert prepare.is_complete(*args, **options, verify="size") is False  # the truncated one
    before = _mtimes(out)
    with caplog.at_level(logging.INFO):
        repaired = prepare.prepare(*args, **options)
    line = next(r.getMessage() for r in caplog.records if "rewrote" in r.getMessage())
    assert "2 of 3 shards damaged" in line and "a record's checksum differs" in line
    assert [p.read_bytes() for p in manifest.shard_paths] == original
    assert repaired == manifest == prepare.load_manifest(out)  # with every checksum
    assert _mtimes(out)[manifest.shard_paths[2].name] == before[manifest.shard_paths[2].name]


def test_a_rewrite_that_differs_from_its_record_redoes_everything(given, shared_data, caplog):
    corpus, out, manifest, options = given
    fields = json.loads((out / "manifest.json").read_text())
    fields["shards"][DAMAGED]["tokens"] += 1  # something the manifest does not record changed
    (out / "manifest.json").write_text(json.dumps(fields))
    _damage(manifest.shard_paths[DAMAGED], "deleted")
    with caplog.at_level(logging.INFO):
        redone = prepare.prepare(str(corpus), out, "wikiextractor", _vocab(shared_data), **options)
    assert "rewriting damaged shards alone failed" in caplog.text
    assert "a rewritten shard differed from its record" in caplog.text
    assert redone == prepare.load_manifest(out)
    assert redone.shards == manifest.shards  # all redone, as they were


def test_a_differing_rewrite_redoes_the_shards_with_the_intact_trained_tokenizer(copy, caplog):
    files, out, original = copy
    fields = json.loads((out / "manifest.json").read_text())
    fields["shards"][DAMAGED]["sentences"] -= 1  # something the manifest does not record changed
    (out / "manifest.json").write_text(json.dumps(fields))
    _damage(out / fields["shards"][DAMAGED]["name"], "deleted")
    before = _mtimes(out)
    with caplog.at_level(logging.INFO):
        manifest = prepare.prepare(files, out, "wikiextractor", **TRAINED)
    assert "the tokenizer is kept" in caplog.text and "training" not in caplog.text
    after = _mtimes(out)
    assert after["sentencepiece.model"] == before["sentencepiece.model"]
    assert all(after[p.name] != before.get(p.name) for p in manifest.shard_paths)
    for path in [*manifest.shard_paths, out / "sentencepiece.model"]:
        assert path.read_bytes() == original[path.name]
    assert manifest.shards == json.loads(original["manifest.json"])["shards"]
