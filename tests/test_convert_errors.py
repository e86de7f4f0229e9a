"""Bad checkpoints: each gives a clear message, and no output directory is left behind."""

import json
import shutil

import numpy as np
import pytest
import reference
from safetensors.numpy import load_file, save_file

from bert import convert
from bert.convert import formats
from bert.convert import params as convert_params
from bert.export import cli


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    directory = tmp_path_factory.mktemp("good")
    reference.hf_model("odd_vocab").save_pretrained(directory)
    return directory


def broken_copy(good, tmp_path, edit_config=None, edit_tensors=None):
    directory = tmp_path / "broken"
    shutil.copytree(good, directory)
    if edit_config:
        config = json.loads((directory / "config.json").read_text())
        edit_config(config)
        (directory / "config.json").write_text(json.dumps(config))
    if edit_tensors:
        tensors = load_file(directory / "model.safetensors")
        edit_tensors(tensors)
        save_file(tensors, directory / "model.safetensors")
    return directory


def fails(source, destination, match):
    """Runs the CLI, expects exit 1 with `match` in stderr and no destination directory."""
    with pytest.raises(convert.CheckpointError, match=match):
        convert.import_model(source)
    assert cli.main([str(source), str(destination), "--to=hf"]) == 2
    assert not destination.exists()
    leftovers = [p.name for p in destination.parent.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers


def test_missing_directory(tmp_path):
    fails(tmp_path / "nope", tmp_path / "out", r"nope: checkpoint directory not found")


def test_directory_without_any_config(tmp_path):
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", tmp_path / "out", r"empty: not a BERT checkpoint directory")


def test_missing_weights_file(good, tmp_path):
    source = broken_copy(good, tmp_path)
    (source / "model.safetensors").unlink()
    fails(source, tmp_path / "out", r"broken: no weights file \(looked for model.safetensors")


def test_model_type_not_bert(good, tmp_path):
    source = broken_copy(good, tmp_path, edit_config=lambda c: c.update(model_type="roberta"))
    fails(source, tmp_path / "out", r"config.json: model_type 'roberta' is not BERT")


def test_missing_required_config_field(good, tmp_path):
    source = broken_copy(good, tmp_path, edit_config=lambda c: c.pop("num_hidden_layers"))
    fails(source, tmp_path / "out", r"config.json: required field 'num_hidden_layers' is missing")


def test_malformed_config_json(good, tmp_path):
    source = broken_copy(good, tmp_path)
    (source / "config.json").write_text("{not json")
    fails(source, tmp_path / "out", r"config.json: not valid JSON")


def test_shape_disagrees_with_config(good, tmp_path):
    source = broken_copy(good, tmp_path, edit_config=lambda c: c.update(intermediate_size=80))
    fails(
        source,
        tmp_path / "out",
        r"parameter bert.encoder.layer.0.intermediate.dense.weight has shape \(96, 64\) "
        r"but the config expects \(80, 64\)",
    )


def test_unknown_tensor_names_are_listed(good, tmp_path):
    def add(tensors):
        tensors["classifier.weight"] = np.zeros((3, 64), np.float32)
        tensors["bert.encoder.layer.7.output.dense.bias"] = np.zeros(64, np.float32)

    source = broken_copy(good, tmp_path, edit_tensors=add)
    fails(
        source,
        tmp_path / "out",
        r"unknown tensor names: bert.encoder.layer.7.output.dense.bias, classifier.weight",
    )
    imported = convert.import_model(source, ignore_unknown=True)
    assert "classifier.weight" in imported.ignored


def test_missing_tensor_names_are_listed(good, tmp_path):
    def drop(tensors):
        del tensors["bert.encoder.layer.1.attention.self.key.weight"]
        del tensors["cls.seq_relationship.bias"]

    source = broken_copy(good, tmp_path, edit_tensors=drop)
    fails(
        source, tmp_path / "out", r"missing tensors: bert.encoder.layer.1.attention.self.key.weight"
    )
    with pytest.raises(
        convert.CheckpointError, match=r"missing tensors: cls.seq_relationship.bias"
    ):
        convert_params.params_from_hf(
            {k: v for k, v in load_file(good / "model.safetensors").items()
             if k != "cls.seq_relationship.bias"},
            convert.import_model(good).config,
            "x",
        )  # fmt: skip


def test_absent_heads_are_reported_not_invented(good, tmp_path):
    def drop_heads(tensors):
        for name in [k for k in tensors if k.startswith("cls.")]:
            del tensors[name]

    source = broken_copy(good, tmp_path, edit_tensors=drop_heads)
    imported = convert.import_model(source)
    assert imported.missing_heads == ("mlm", "nsp")
    assert "mlm" not in imported.params and "nsp" not in imported.params
    assert cli.main([str(source), str(tmp_path / "out"), "--to=hf"]) == 0
    written = load_file(tmp_path / "out" / "model.safetensors")
    assert not any(k.startswith("cls.") for k in written)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [
        "BertModel"
    ]


def test_existing_output_is_not_overwritten(good, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    assert cli.main([str(good), str(tmp_path / "out"), "--to=hf"]) == 2
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"
    assert cli.main([str(good), str(tmp_path / "out"), "--to=hf", "--overwrite"]) == 0
    assert not (tmp_path / "out" / "keep.txt").exists()
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_failure_while_writing_leaves_nothing(good, tmp_path, monkeypatch):
    imported = convert.import_model(good)

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(formats, "copy_tokenizer_files", explode)
    with pytest.raises(OSError, match="disk full"):
        convert.export_hf(imported.params, imported.config, tmp_path / "out", good)
    assert list(tmp_path.iterdir()) == []


def test_export_is_as_readable_as_a_folder_made_by_hand(good, tmp_path):
    """The temporary folder (mkdtemp: owner-only) must not leave an export private."""
    assert cli.main([str(good), str(tmp_path / "out"), "--to=hf"]) == 0
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "f").write_text("x")
    assert (tmp_path / "out").stat().st_mode == (tmp_path / "plain").stat().st_mode
    for path in (tmp_path / "out").iterdir():
        assert path.stat().st_mode == (tmp_path / "plain" / "f").stat().st_mode, path.name
