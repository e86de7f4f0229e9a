"""Checkpoint import/export: Google TF, HF safetensors/.bin/msgpack, ours, and round trips."""

import numpy as np
import pytest
import reference
import torch
import transformers
from flax import traverse_util
from safetensors.numpy import load_file

from bert import convert, heads
from bert.convert import name_table
from bert.export import cli
from bert.heads import BertForPreTraining

TOLERANCE = 1e-5


def our_logits(imported, inputs):
    out = BertForPreTraining(imported.config).apply(
        {"params": imported.params},
        inputs["input_ids"],
        inputs["token_type_ids"],
        inputs["attention_mask"],
    )
    return {k: np.asarray(out[k]) for k in ("mlm_logits", "nsp_logits")}


def assert_close(got: dict, want: dict, tolerance: float = TOLERANCE):
    for key in ("mlm_logits", "nsp_logits"):
        error = float(np.max(np.abs(got[key] - want[key])))
        assert error <= tolerance, f"{key}: max abs difference {error:.2e}"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random BertForPreTraining saved as safetensors, and its model."""
    model = reference.hf_model("odd_vocab", seed=3)
    directory = tmp_path_factory.mktemp("hf")
    model.save_pretrained(directory)
    return directory, model


def test_google_tf_checkpoint_gives_reference_logits(tmp_path, hf_dir):
    _, model = hf_dir
    reference.write_google_checkpoint(tmp_path / "google", model)
    imported = convert.import_model(tmp_path / "google")
    assert imported.source_format == "tf"
    assert imported.groups == ("encoder", "pooler", "mlm", "nsp")
    assert "global_step" in imported.ignored
    assert sum(name.endswith(("/adam_m", "/adam_v")) for name in imported.ignored) == 10
    inputs = reference.batch(reference.CONFIGS["odd_vocab"], seed=4)
    assert_close(our_logits(imported, inputs), reference.hf_forward(model, inputs))
    # The checkpoint's prefix, as Google's scripts take it, names the same model.
    by_prefix = convert.import_model(tmp_path / "google" / "bert_model.ckpt")
    assert by_prefix.source == tmp_path / "google"
    flat = traverse_util.flatten_dict
    assert flat(by_prefix.params).keys() == flat(imported.params).keys()
    for key, value in flat(imported.params).items():
        np.testing.assert_array_equal(flat(by_prefix.params)[key], value)


def test_google_to_hf_cli_loads_in_transformers(tmp_path, hf_dir):
    _, model = hf_dir
    reference.write_google_checkpoint(tmp_path / "google", model)
    assert cli.main([str(tmp_path / "google"), str(tmp_path / "out"), "--to=hf"]) == 0
    assert (tmp_path / "out" / "vocab.txt").is_file()
    loaded, info = transformers.BertForPreTraining.from_pretrained(
        tmp_path / "out", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    inputs = reference.batch(reference.CONFIGS["odd_vocab"], seed=5)
    assert_close(reference.hf_forward(loaded.eval(), inputs), reference.hf_forward(model, inputs))


def test_ours_to_hf_loads_with_no_missing_keys_and_same_logits(tmp_path):
    config = name_table.config_from_hf(
        transformers.BertConfig(**reference.CONFIGS["three_heads"]).to_dict(), tmp_path
    )
    import jax

    inputs = reference.batch(reference.CONFIGS["three_heads"])
    variables = BertForPreTraining(config).init(jax.random.key(7), inputs["input_ids"])
    params = jax.tree.map(np.asarray, traverse_util.unflatten_dict(
        {k: v.value for k, v in traverse_util.flatten_dict(variables["params"]).items()}
    ))  # fmt: skip
    convert.save_orbax(params, config, tmp_path / "ours")
    assert cli.main([str(tmp_path / "ours"), str(tmp_path / "hf"), "--to=hf"]) == 0
    loaded, info = transformers.BertForPreTraining.from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert not any(info.values()), info
    ours = our_logits(convert.import_model(tmp_path / "ours"), inputs)
    assert_close(ours, reference.hf_forward(loaded.eval(), inputs))


def test_hf_to_ours_to_hf_gives_identical_tensors(tmp_path, hf_dir):
    source, _ = hf_dir
    assert cli.main([str(source), str(tmp_path / "ours"), "--to=orbax"]) == 0
    assert cli.main([str(tmp_path / "ours"), str(tmp_path / "back"), "--to=hf"]) == 0
    before = load_file(source / "model.safetensors")
    after = load_file(tmp_path / "back" / "model.safetensors")
    # save_pretrained writes the tied decoder weight/bias too; they are the same tensors.
    before = {k: v for k, v in before.items() if k not in name_table.HF_TIED}
    assert sorted(before) == sorted(after)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def test_pytorch_bin_and_flax_msgpack_import_equal_safetensors(tmp_path, hf_dir):
    source, model = hf_dir
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    flax_model = transformers.FlaxBertForPreTraining.from_pretrained(source, from_pt=True)
    flax_model.save_pretrained(tmp_path / "flax")
    assert (tmp_path / "flax" / "flax_model.msgpack").is_file()
    want = traverse_util.flatten_dict(convert.import_model(source).params)
    for directory in ("bin", "flax"):
        got = traverse_util.flatten_dict(convert.import_model(tmp_path / directory).params)
        assert set(got) == set(want), directory
        for path in want:
            np.testing.assert_array_equal(got[path], want[path], err_msg=f"{directory} {path}")


def test_hf_bin_import_is_weights_only(tmp_path, hf_dir):
    """A .bin file that would run code on unpickling is refused, not executed."""
    _, model = hf_dir
    (tmp_path / "evil").mkdir()
    model.config.save_pretrained(tmp_path / "evil")

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"x": Payload()}, tmp_path / "evil" / "pytorch_model.bin")
    with pytest.raises(convert.CheckpointError, match="pytorch_model.bin"):
        convert.import_model(tmp_path / "evil")


@pytest.mark.parametrize("architecture", ["BertForSequenceClassification",
                                          "BertForTokenClassification",
                                          "BertForQuestionAnswering"])  # fmt: skip
def test_fine_tuned_hf_heads_load_and_give_transformers_logits(tmp_path, architecture, capsys):
    """An HF directory of a fine-tuned classifier, tagger or span predictor loads with its head
    (no unknown tensors), and our head module gives transformers' logits within 1e-5; a
    conversion writes the encoder and says it leaves the head out."""
    torch.manual_seed(0)
    labels = 2 if architecture == "BertForQuestionAnswering" else 3  # QA: start and end
    hf_config = transformers.BertConfig(**reference.CONFIGS["odd_vocab"], num_labels=labels)
    model = getattr(transformers, architecture)(hf_config).eval()
    model.save_pretrained(tmp_path / "hf")
    imported = convert.import_model(tmp_path / "hf")
    inputs = reference.batch(reference.CONFIGS["odd_vocab"], seed=7)
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    args = (inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
    mask = inputs["attention_mask"]
    width = imported.config.hidden_size  # HF's tagger and span predictor have no pooler, which
    pooler = {"kernel": np.zeros((width, width)), "bias": np.zeros(width)}  # they never use
    encoder = {"pooler": pooler, **imported.params["bert"]}
    if architecture == "BertForQuestionAnswering":
        params = {"bert": encoder, "qa_outputs": imported.params["qa_outputs"]}
        qa = heads.BertForQuestionAnswering(imported.config)
        got = np.stack(qa.apply({"params": params}, *args)) * mask
        want = np.stack([out.start_logits.numpy(), out.end_logits.numpy()]) * mask
    else:
        head = getattr(heads, architecture)(imported.config, labels)
        params = {"bert": encoder, "classifier": imported.params["classifier"]}
        got, want = np.asarray(head.apply({"params": params}, *args)), out.logits.numpy()
    error = float(np.max(np.abs(np.asarray(got) - want)))
    assert error <= TOLERANCE, f"max abs difference {error:.2e}"
    capsys.readouterr()
    assert cli.main([str(tmp_path / "hf"), str(tmp_path / "orbax"), "--to=orbax"]) == 0
    assert "fine-tuned head not written: " in capsys.readouterr().out
