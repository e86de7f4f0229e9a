"""ModernBERT's task heads as transformers 4.57 defines them (`model.prediction_head`): ours
equal ModernBertForSequenceClassification ([CLS] and mean pooling), ...ForTokenClassification
and ...ForQuestionAnswering built with random weights (logits within 1e-5, gradients within
1e-4, padding and local windows narrower than the rows included); their directories convert
both ways bit for bit; and the GLUE, NER and SQuAD jobs fine-tune a ModernBertForMaskedLM
directory into workdirs that export as those classes, which transformers loads with our
logits."""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util

from bert import convert, heads, pretrained
from bert.convert import modernbert_table
from bert.convert.formats import CheckpointError
from bert.convert.name_table import CLASSIFIER, QA_OUTPUTS
from bert.export import cli
from bert.jobs import glue as glue_job
from bert.jobs import ner as ner_job
from bert.jobs import squad as squad_job
from bert.model import BertConfig
from bert.tasks import glue
from bert.training import checkpoints
from configs import glue as glue_config
from configs import ner as ner_config
from configs import squad as squad_config

SMALL = dict(vocab_size=101, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
             intermediate_size=40, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
             bos_token_id=2, cls_token_id=2, sep_token_id=1, reference_compile=False)  # fmt: skip
CONFIGS = {  # local windows narrower than the rows (12 tokens)
    "biases": dict(local_attention=4, global_attn_every_n_layers=2, global_rope_theta=1000.0,
                   local_rope_theta=50.0, norm_bias=True, attention_bias=True, mlp_bias=True,
                   classifier_bias=True, hidden_activation="gelu_pytorch_tanh",
                   classifier_activation="gelu_pytorch_tanh"),
    "plain": dict(local_attention=6, global_attn_every_n_layers=3, classifier_dropout=0.1),
}  # fmt: skip
CLASSES = {  # our task: (transformers' class, our head's parameter group)
    "sequence": (transformers.ModernBertForSequenceClassification, CLASSIFIER),
    "token": (transformers.ModernBertForTokenClassification, CLASSIFIER),
    "qa": (transformers.ModernBertForQuestionAnswering, QA_OUTPUTS),
}
CASES = {  # (task, classifier_pooling, config)
    "sequence_cls": ("sequence", "cls", "biases"),
    "sequence_mean": ("sequence", "mean", "plain"),
    "token": ("token", "cls", "biases"),
    "qa": ("qa", "mean", "plain"),  # pooling is the sequence classifier's alone
}
LABELS = 3  # classes of the classifiers (QA has 2 outputs: start and end)
LENGTHS = (12, 7, 3)  # real tokens per row; the rest is padding


def _hf(case: str, seed: int = 0, **extra):
    task, pooling, config_name = CASES[case]
    cls, _ = CLASSES[task]
    labels = 2 if task == "qa" else LABELS
    config = transformers.ModernBertConfig(**SMALL, **CONFIGS[config_name], num_labels=labels,
                                           classifier_pooling=pooling, **extra)  # fmt: skip
    config._attn_implementation = "eager"  # the reference computation, mask by mask
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # norms away from 1 and biases away from 0, so that each one shows
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return model


def _inputs(seed: int = 1, vocab: int = SMALL["vocab_size"]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, (len(LENGTHS), max(LENGTHS))).astype(np.int32)
    mask = (np.arange(max(LENGTHS))[None, :] < np.array(LENGTHS)[:, None]).astype(np.int32)
    return ids * mask, mask  # padding is the pad id, 0


def _ours(model, group: str):
    config = modernbert_table.config_from_hf(model.config.to_dict(), pathlib.Path("config.json"))
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params = modernbert_table.params_from_hf(tensors, config, group)
    return config, jax.tree.map(jnp.asarray, params)


def _module(task: str, config: BertConfig, labels: int = LABELS):
    if task == "sequence":
        return heads.BertForSequenceClassification(config, labels)
    if task == "token":
        return heads.BertForTokenClassification(config, labels)
    return heads.BertForQuestionAnswering(config)


def _apply(task: str, config, params, ids, mask) -> jax.Array:
    """Our logits ([batch, labels], [batch, length, labels], QA [batch, length, 2])."""
    out = _module(task, config).apply({"params": params}, ids, None, mask)
    return jnp.stack(out, axis=-1) if task == "qa" else out


def _theirs(model, ids, mask) -> torch.Tensor:
    out = model(torch.as_tensor(ids).long(), torch.as_tensor(mask))
    if isinstance(model, transformers.ModernBertForQuestionAnswering):
        return torch.stack([out.start_logits, out.end_logits], dim=-1)
    return out.logits


@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_transformers(case):
    """Every row's (and every position's, padding included) logits within 1e-5."""
    task, pooling, _ = CASES[case]
    model = _hf(case)
    config, params = _ours(model, CLASSES[task][1])
    assert config.prediction_head and config.classifier_pooling == pooling
    assert config.is_local(1) and not config.is_local(0)
    assert "pooler" not in params["bert"] and set(params) == {"bert", "head", CLASSES[task][1]}
    ids, mask = _inputs()
    with torch.no_grad():
        want = _theirs(model, ids, mask).numpy()
    got = np.asarray(_apply(task, config, params, ids, mask))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "case", ["sequence_cls", "sequence_mean", *[pytest.param(c, marks=pytest.mark.full)
                                                 for c in ("token", "qa")]],
)  # fmt: skip
def test_gradients_equal_transformers(case):
    """The gradient of one scalar of the logits (a fixed random weighting of the real rows' or
    positions') for every parameter, within 1e-4."""
    task, _, _ = CASES[case]
    model = _hf(case)
    ids, mask = _inputs()
    shape = tuple(_theirs(model, ids, mask).shape)
    weights = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    if task != "sequence":
        weights *= mask[..., None]
    (_theirs(model, ids, mask) * torch.from_numpy(weights)).sum().backward()
    hf_grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
    config, params = _ours(model, CLASSES[task][1])

    def loss(params):
        return jnp.sum(_apply(task, config, params, ids, mask) * weights)

    ours = traverse_util.flatten_dict(jax.grad(loss)(params))
    want = traverse_util.flatten_dict(
        modernbert_table.params_from_hf(hf_grads, config, CLASSES[task][1])
    )
    assert ours.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_allclose(np.asarray(ours[key]), value, atol=1e-4, rtol=0,
                                   err_msg="/".join(key))  # fmt: skip


@pytest.mark.parametrize("case", ["sequence_mean", "token", "qa"])
def test_directories_convert_both_ways_bit_for_bit(case, tmp_path):
    """A task class's directory through `python -m bert.convert --to=hf`: the same class, the
    same tensors bit for bit, the same labels and pooling; transformers loads it with no
    missing or unexpected keys and the same logits."""
    task, pooling, _ = CASES[case]
    cls, group = CLASSES[task]
    names = {0: "neg", 1: "neutral", 2: "pos"} if task != "qa" else {0: "start", 1: "end"}
    model = _hf(case, id2label=names, label2id={v: k for k, v in names.items()})
    model.save_pretrained(tmp_path / "src")
    imported = convert.import_model(tmp_path / "src")
    assert imported.architecture == cls.__name__ and imported.groups == ("encoder", "head", group)
    assert cli.main([str(tmp_path / "src"), str(tmp_path / "out"), "--to=hf"]) == 0
    loaded, info = cls.from_pretrained(tmp_path / "out", output_loading_info=True,
                                       attn_implementation="eager")  # fmt: skip
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.config.id2label == names and loaded.config.classifier_pooling == pooling
    assert loaded.config.classifier_dropout == model.config.classifier_dropout
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(want[k].dtype == got[k].dtype and torch.equal(want[k], got[k]) for k in want)
    ids, mask = _inputs()
    with torch.no_grad():
        np.testing.assert_array_equal(_theirs(loaded.eval(), ids, mask).numpy(),
                                      _theirs(model, ids, mask).numpy())  # fmt: skip


def test_unfit_heads_and_poolings_are_one_line_errors(tmp_path):
    """A QA classifier without 2 outputs and an unknown pooling name the file and field."""
    model = _hf("qa")
    with torch.no_grad():
        model.classifier = torch.nn.Linear(32, 3)
    model.save_pretrained(tmp_path / "qa")
    with pytest.raises(CheckpointError, match=r"parameter qa_outputs/kernel has shape \(32, 3\) "
                       r"but .*config.json gives \(32, 2\)"):  # fmt: skip
        convert.import_model(tmp_path / "qa")
    _hf("sequence_cls").save_pretrained(tmp_path / "cls")
    path = tmp_path / "cls" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "classifier_pooling": "max"}))
    with pytest.raises(CheckpointError, match=r"config.json: classifier_pooling must be 'cls' or "
                       r"'mean', got 'max'"):  # fmt: skip
        convert.import_model(tmp_path / "cls")
    config = BertConfig(vocab_size=11, hidden_size=8, num_layers=1, num_heads=2,
                        intermediate_size=8, prediction_head=True,
                        classifier_pooling="max")  # fmt: skip
    ids = jnp.ones((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="model.classifier_pooling 'max' is not one of cls, mean"):
        heads.BertForSequenceClassification(config, 2).init(jax.random.key(0), ids)


def test_fine_tuning_starts_the_head_from_the_checkpoints(tmp_path):
    """As transformers' from_pretrained: a task head's transform from the checkpoint's MLM head
    (ModernBertForMaskedLM), or from its own task head; BERT's heads take the encoder alone."""
    config = transformers.ModernBertConfig(**SMALL, **CONFIGS["biases"])
    transformers.ModernBertForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    mlm = convert.import_model(tmp_path / "mlm")
    model = heads.BertForTokenClassification(mlm.config, 5)
    start = heads.fine_tuning_start(model, mlm.params)
    assert set(start) == {"bert", "head"}
    assert set(start["head"]) == {"transform", "transform_norm"}
    assert all(start["head"][k] is mlm.params["mlm"][k] for k in start["head"])
    _hf("sequence_cls").save_pretrained(tmp_path / "cls")
    task = convert.import_model(tmp_path / "cls")
    start = heads.fine_tuning_start(heads.BertForQuestionAnswering(task.config), task.params)
    assert set(start) == {"bert", "head"} and start["head"] is task.params["head"]
    bert = BertConfig(vocab_size=11, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8)
    model = heads.BertForSequenceClassification(bert, 2)
    assert set(heads.fine_tuning_start(model, {"bert": {}, "mlm": {}})) == {"bert"}


# ----------------------------------------------------------------------------- the jobs

VOCAB = "bert-base-uncased-vocab.txt"
JOB_MODEL = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                 intermediate_size=48, max_position_embeddings=128, pad_token_id=0,
                 cls_token_id=101, sep_token_id=102, bos_token_id=101, eos_token_id=102,
                 local_attention=16, global_attn_every_n_layers=2, norm_bias=True,
                 classifier_bias=True, classifier_pooling="mean",
                 reference_compile=False)  # fmt: skip


@pytest.fixture(scope="module")
def modern_mlm(shared_data, tmp_path_factory) -> pathlib.Path:
    """A small random ModernBertForMaskedLM directory (mean pooling for its classifiers, a
    local window of 16) with the uncased WordPiece vocab.txt beside it."""
    directory = tmp_path_factory.mktemp("modern_mlm")
    torch.manual_seed(0)
    model = transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(**JOB_MODEL))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    model.save_pretrained(directory)
    shutil.copyfile(shared_data / "vocab" / VOCAB, directory / "vocab.txt")
    return directory


def _quick(config, init_from: pathlib.Path, seq: int = 64):
    """A short run: small slices, 4 steps, one checkpoint at the end."""
    config.init_from = str(init_from)
    config.max_seq_length, config.pad_to_multiple_of = seq, 16
    config.train_limit, config.eval_limit, config.eval_batch_size = 48, 32, 16
    t = config.train
    t.batch_size, t.steps, t.learning_rate, t.log_every = 16, 4, 1e-3, 2
    t.checkpoint_every, t.async_checkpoints = 4, False
    return config


def _exported_equals_ours(workdir, out, auto_class, architecture: str, task: str):
    """Exports `workdir`; transformers loads it as `architecture` with no missing or unexpected
    keys and our logits (padding included). Returns the HF model."""
    assert cli.main([str(workdir), str(out), "--to=hf"]) == 0
    model, info = auto_class.from_pretrained(out, output_loading_info=True,
                                             attn_implementation="eager")  # fmt: skip
    assert type(model).__name__ == architecture
    assert not info["missing_keys"] and not info["unexpected_keys"]
    params, meta = checkpoints.load_params(workdir)
    config = BertConfig.from_dict(meta["model"])
    assert config.prediction_head and set(params) == {"bert", "head", CLASSES[task][1]}
    assert "pooler" not in params["bert"]
    ids, mask = _inputs(seed=5, vocab=JOB_MODEL["vocab_size"])
    segments = np.ones_like(ids)  # no token types: ignored
    with torch.no_grad():
        want = _theirs(model.eval(), ids, mask).numpy()
    module = _module(task, config, model.config.num_labels)
    got = module.apply({"params": params}, ids, segments, mask)
    got = np.stack(got, axis=-1) if task == "qa" else np.asarray(got)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    return model


def test_glue_fine_tunes_modernbert_and_exports_its_classifier(shared_data, modern_mlm, tmp_path):
    """MRPC (sentence pairs) from a ModernBertForMaskedLM directory: the run scores the dev set
    and its workdir loads in transformers as ModernBertForSequenceClassification with the
    checkpoint's mean pooling, MRPC's labels and our logits."""
    config = _quick(glue_config.get_config("task=mrpc"), modern_mlm)
    config.data_dir = str(shared_data / "glue" / "MRPC")
    config.predict_splits = ()
    results = glue_job.run(config, str(tmp_path / "run"))
    assert results["step"] == 4 and set(results["dev"]) == set(glue.get_task("mrpc").metrics)
    model = _exported_equals_ours(tmp_path / "run", tmp_path / "hf",
                                  transformers.AutoModelForSequenceClassification,
                                  "ModernBertForSequenceClassification", "sequence")  # fmt: skip
    assert model.config.classifier_pooling == "mean"
    assert list(model.config.id2label.values()) == list(glue.get_task("mrpc").labels)
    assert model.config.problem_type == "single_label_classification"
    assert model.config.pad_token_id == 0 and model.config.cls_token_id == 101
    # The exported tokenizer gives our ids, and no token_type_ids (ModernBERT's forward has none).
    dev = glue.read_split(glue.get_task("mrpc"), config.data_dir, "dev")[:6]
    firsts, seconds = [e.text_a for e in dev], [e.text_b for e in dev]
    encoded = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(
        firsts, seconds, padding=True, return_tensors="pt"
    )
    assert set(encoded) == {"input_ids", "attention_mask"}
    tokenizer = pretrained.load(str(tmp_path / "run")).tokenizer
    for row, first, second in zip(encoded["input_ids"].tolist(), firsts, seconds, strict=True):
        ids, _ = tokenizer.build_inputs(tokenizer.encode_ids(first), tokenizer.encode_ids(second))
        assert row[: len(ids)] == ids and set(row[len(ids) :]) <= {0}
    with torch.no_grad():
        theirs = model(**encoded).logits.numpy()
    params, meta = checkpoints.load_params(tmp_path / "run")
    ours = heads.BertForSequenceClassification(BertConfig.from_dict(meta["model"]), 2).apply(
        {"params": params}, encoded["input_ids"].numpy(), None, encoded["attention_mask"].numpy()
    )
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5, rtol=0)


@pytest.mark.full
def test_ner_fine_tunes_modernbert_and_exports_its_tagger(shared_data, modern_mlm, tmp_path):
    config = _quick(ner_config.get_config(), modern_mlm)
    config.data_dir = str(shared_data / "conll2003")
    results = ner_job.run(config, str(tmp_path / "run"))
    assert 0.0 <= results["valid"]["f1"] <= 1.0
    model = _exported_equals_ours(tmp_path / "run", tmp_path / "hf",
                                  transformers.AutoModelForTokenClassification,
                                  "ModernBertForTokenClassification", "token")  # fmt: skip
    assert model.config.id2label[0] == "O"


@pytest.mark.full
def test_squad_fine_tunes_modernbert_and_exports_its_span_head(shared_data, modern_mlm, tmp_path):
    data = json.loads((shared_data / "squad" / "dev-v1.1.json").read_text())
    data["data"] = data["data"][:1]
    (tmp_path / "squad.json").write_text(json.dumps(data))
    config = _quick(squad_config.get_config("version=1.1"), modern_mlm, seq=96)
    config.train_file = config.predict_file = str(tmp_path / "squad.json")
    config.doc_stride, config.max_query_length = 48, 24
    results = squad_job.run(config, str(tmp_path / "run"))
    assert results["dev"]["total"] == 32 and 0.0 <= results["dev"]["f1"] <= 100.0
    _exported_equals_ours(tmp_path / "run", tmp_path / "hf",
                          transformers.AutoModelForQuestionAnswering,
                          "ModernBertForQuestionAnswering", "qa")  # fmt: skip
