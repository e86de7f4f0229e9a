"""A GLUE fine-tuning run with its layers stacked under nn.scan (model.scan_layers, remat)
equals the unrolled run from the same checkpoint and exports the same HF directory."""

import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file
from test_finetune_jobs import quick

from bert import pretrained
from bert.export import cli
from bert.finetuning import finetune
from bert.heads import BertForSequenceClassification
from bert.jobs import glue as glue_job
from bert.layer_stack import unstack_layers
from configs import glue as glue_config

# Scanned against unrolled after 4 AdamW steps, dropout 0: parameters, logits, metrics and the
# exported tensors. The forward passes agree within 1e-6 (tests/test_layer_scan.py), but Adam's
# update of a gradient near 0 changes by up to lr x (its round-off / eps): a round-off of 1e-8
# at lr 1e-3 and eps 1e-6 moves a parameter by up to 1e-5. Measured: 7.5e-9 here; NER, SQuAD and
# embedding runs of the same shape up to 1.9e-6.
SCAN_TOLERANCE = 1e-5


def _close_trees(got: dict, want: dict) -> None:
    got, want = traverse_util.flatten_dict(got), traverse_util.flatten_dict(want)
    assert got.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, atol=SCAN_TOLERANCE, rtol=0, err_msg=str(key))


@pytest.mark.full
def test_glue_with_scanned_layers_equals_unrolled_and_exports_alike(shared_data, tiny_hf, tmp_path):
    """MRPC from the same HF checkpoint (unrolled), 4 steps with model.scan_layers and
    remat=dots and 4 without: the scanned workdir holds stacked layers, and its parameters, dev
    logits and metrics equal the unrolled run's within SCAN_TOLERANCE; both export the same HF
    directory; and either workdir starts a fine-tuning run of the other layout. Dropout is 0:
    under nn.scan each layer draws dropout from its own split of the key, so with dropout the
    two runs train on different masks by design."""
    workdirs, results = {}, {}
    for scan in (False, True):
        config = quick(glue_config.get_config("task=mrpc"), tiny_hf)
        config.data_dir = str(shared_data / "glue" / "MRPC")
        config.predict_splits = ()
        config.model.hidden_dropout = config.model.attention_dropout = 0.0
        config.model.scan_layers, config.model.remat = scan, "dots" if scan else "none"
        workdirs[scan] = tmp_path / ("scanned" if scan else "unrolled")
        results[scan] = glue_job.run(config, str(workdirs[scan]))
    assert results[True]["step"] == results[False]["step"] == 4
    assert results[True]["dev"] == pytest.approx(results[False]["dev"], abs=SCAN_TOLERANCE)
    dev = [(workdirs[scan] / "predictions" / "dev.tsv").read_text() for scan in (False, True)]
    assert dev[0] == dev[1]

    loaded = {scan: pretrained.load(str(workdirs[scan])) for scan in (False, True)}
    assert loaded[True].config.scan_layers and "layers" in loaded[True].encoder
    assert not loaded[False].config.scan_layers and "layer_1" in loaded[False].encoder
    _close_trees(unstack_layers(loaded[True].params, loaded[True].config), loaded[False].params)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30522, (6, 40)).astype(np.int32)
    mask = (np.arange(40)[None, :] < np.array([40, 31, 17, 9, 4, 2])[:, None]).astype(np.int32)
    segments = (np.arange(40)[None, :] >= 12).astype(np.int32) * mask
    logits = {}
    for scan, model in loaded.items():
        classifier = BertForSequenceClassification(model.config, 2)
        logits[scan] = classifier.apply({"params": model.params}, ids * mask, segments, mask)
    np.testing.assert_allclose(logits[True], logits[False], atol=SCAN_TOLERANCE, rtol=0)

    exported = {}
    for scan in (False, True):
        out = tmp_path / f"hf_{scan}"
        assert cli.main([str(workdirs[scan]), str(out), "--to=hf"]) == 0
        exported[scan] = out
    names = sorted(p.name for p in exported[False].iterdir())
    assert names == sorted(p.name for p in exported[True].iterdir())
    for name in names:
        if name != "model.safetensors":  # config.json (the class, labels) and the tokenizer
            want = (exported[False] / name).read_bytes()
            assert (exported[True] / name).read_bytes() == want, name
    tensors = [load_file(exported[scan] / "model.safetensors") for scan in (False, True)]
    _close_trees(tensors[1], tensors[0])

    # Each workdir starts the other layout: relaid out on load, equal to the other's own.
    for scan in (False, True):
        other = finetune.load_encoder(str(workdirs[scan]), "", {"scan_layers": not scan})
        assert other.config.scan_layers is (not scan)
        _close_trees(other.params, loaded[not scan].params)
