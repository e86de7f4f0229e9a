"""`python -m bert.convert WORKDIR DST --to=hf`: a tiny pre-training run that trains its own
SentencePiece model, and GLUE, NER and SQuAD runs fine-tuned from it, exported to HF
directories that transformers loads into the matching class with no missing or unexpected
keys, whose tokenizer (AutoTokenizer) splits real Wikipedia text into our ids, and whose
logits equal ours."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util
from hub_upload_server import FakeHub

from bert import heads, pretrained
from bert.export import cli
from bert.jobs import glue as glue_job
from bert.jobs import ner as ner_job
from bert.jobs import pretrain
from bert.jobs import squad as squad_job
from bert.model import BertConfig
from bert.tasks import glue
from bert.tasks import ner as ner_tasks
from bert.training import checkpoints
from configs import bert_base
from configs import glue as glue_config
from configs import ner as ner_config
from configs import squad as squad_config
from input_pipeline import corpora, tokenizers

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEQ = 64  # the runs' sequence length and the models' positions
TOLERANCE = 1e-5
WIKI = ("wiki_00", "wiki_01")  # pre-training text; wiki_05 is the text the tokenizer is tested on
# Text that exercises SentencePiece's normalisation (NFKC, whitespace) and unknown characters.
EDGE_CASES = [
    "",
    " ",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew lines\r\n and  runs   of    spaces",
    "Zürich, Kraków, São Paulo, Reykjavík; ÜBER ümlaut",
    "½ ﬁ ﬀ ｆｕｌｌｗｉｄｔｈ Ⅻ ㎏ ǅ",
    "東京 北京市 서울 Москва Αθήνα القاهرة",
    "12345.678 1,000,000 3.14e-10 0x1F 2026-12-01 10:40",
    "¿¡«»—–… “quotes” ‘single’ (brackets) [square] {curly} <angle> & % $ # @ ! ?",
    "emoji 😀👍🏽 and zero\u200bwidth and no\u00a0break",
]


def _sentences(path: pathlib.Path, limit: int) -> list[str]:
    sentences = [s for doc in corpora.read_wikiextractor(path) for s in doc]
    return sentences[:limit]


@pytest.fixture(scope="module")
def pretrained_run(shared_data, tmp_path_factory) -> pathlib.Path:
    """3 LAMB steps of the tiny model; the job trains a 2,000-piece SentencePiece model."""
    workdir = tmp_path_factory.mktemp("pretrain")
    config = bert_base.get_config("size=tiny")
    wiki = shared_data / "wikipedia" / "AA"
    config.data.input = ",".join(str(wiki / name) for name in WIKI)
    config.data.format = "wikiextractor"
    config.data.sentencepiece_vocab_size = 2000
    config.data.num_shards = 2
    config.data.max_predictions_per_seq = 10
    config.max_seq_length = config.model.max_position_embeddings = SEQ
    t = config.train
    t.batch_size, t.steps, t.warmup_steps, t.learning_rate = 16, 3, 1, 1e-2
    t.log_every, t.eval_every, t.eval_batches, t.checkpoint_every = 1, 1000, 1, 2
    t.async_checkpoints = False
    pretrain.run(config, str(workdir))
    return workdir


def _finetune(config, init_from: pathlib.Path):
    """`config` for 2 steps on a few examples, from the checkpoint in `init_from`."""
    config.init_from = str(init_from)
    config.max_seq_length = SEQ
    config.train_limit, config.eval_limit, config.eval_batch_size = 32, 16, 16
    t = config.train
    t.batch_size, t.steps, t.learning_rate, t.log_every = 16, 2, 1e-2, 1
    t.checkpoint_every, t.async_checkpoints = 2, False
    return config


@pytest.fixture(scope="module")
def glue_run(shared_data, pretrained_run, tmp_path_factory) -> pathlib.Path:
    """MRPC (sentence pairs) fine-tuned from the pre-training run."""
    workdir = tmp_path_factory.mktemp("mrpc")
    config = _finetune(glue_config.get_config("task=mrpc"), pretrained_run)
    config.data_dir = str(shared_data / "glue" / "MRPC")
    config.predict_splits = ()
    glue_job.run(config, str(workdir))
    return workdir


def export(workdir: pathlib.Path, destination: pathlib.Path, *flags: str) -> pathlib.Path:
    assert cli.main([str(workdir), str(destination), "--to=hf", *flags]) == 0
    return destination


def load_hf(auto_class, directory: pathlib.Path, architecture: str):
    """The HF model, after checking that every tensor was used and none was missing."""
    model, info = auto_class.from_pretrained(directory, output_loading_info=True)
    assert type(model).__name__ == architecture
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [],
                    "error_msgs": []}  # fmt: skip
    return model.eval()


def ours(workdir: pathlib.Path, step: int | None = None):
    """Our parameters, config and tokenizer, read straight from the checkpoint."""
    params, meta = checkpoints.load_params(workdir, step)
    tokenizer = tokenizers.load_tokenizer(workdir / meta["tokenizer"])
    return params, BertConfig.from_dict(meta["model"]), tokenizer


def batch(hf_tokenizer, texts, pairs=None) -> dict[str, np.ndarray]:
    encoded = hf_tokenizer(texts, pairs, padding=True)
    return {k: np.asarray(v) for k, v in encoded.items()}


def our_batch(tokenizer, texts, pairs=None) -> dict[str, np.ndarray]:
    """Our encoder inputs for the same texts, padded to the longest."""
    rows = []
    for i, text in enumerate(texts):
        second = tokenizer.encode_ids(pairs[i]) if pairs else None
        rows.append(tokenizer.build_inputs(tokenizer.encode_ids(text), second))
    width = max(len(ids) for ids, _ in rows)
    assert width <= SEQ
    ids = np.zeros((len(rows), width), np.int64)
    segments, mask = np.zeros_like(ids), np.zeros_like(ids)
    for i, (row, segs) in enumerate(rows):
        ids[i, : len(row)], segments[i, : len(row)], mask[i, : len(row)] = row, segs, 1
    return {"input_ids": ids, "token_type_ids": segments, "attention_mask": mask}


def torch_inputs(inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in inputs.items()}


def flax_args(inputs: dict[str, np.ndarray]):
    return inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"]


def close(got, want):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=TOLERANCE, rtol=0)


@pytest.fixture(scope="module")
def wiki_text(shared_data) -> list[str]:
    return _sentences(shared_data / "wikipedia" / "AA" / "wiki_05", 3000)


def short(tokenizer, texts: list[str], count: int) -> list[str]:
    """The first `count` texts of 3 to 29 tokens: a pair of them fits the models' positions."""
    return [t for t in texts if 3 <= len(tokenizer.encode_ids(t)) <= (SEQ - 3) // 2][:count]


@pytest.mark.full
def test_pretrained_workdir_exports_its_sentencepiece_tokenizer_and_logits(
    pretrained_run, wiki_text, tmp_path
):
    out = export(pretrained_run, tmp_path / "hf")
    params, config, tokenizer = ours(pretrained_run)
    assert isinstance(tokenizer, tokenizers.SentencePieceTokenizer)

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    for text in EDGE_CASES + wiki_text:
        want, _ = tokenizer.build_inputs(tokenizer.encode_ids(text))
        assert hf_tokenizer(text)["input_ids"] == want, text
    texts = short(tokenizer, wiki_text, 40)
    first, second = texts[0::2], texts[1::2]
    inputs = our_batch(tokenizer, first, second)
    assert {k: v.tolist() for k, v in batch(hf_tokenizer, first, second).items()} == {
        k: v.tolist() for k, v in inputs.items()
    }
    assert hf_tokenizer.mask_token_id == tokenizer.mask_id
    assert hf_tokenizer.pad_token_id == tokenizer.pad_id

    model = load_hf(transformers.AutoModelForPreTraining, out, "BertForPreTraining")
    with torch.no_grad():
        theirs = model(**torch_inputs(inputs))
    mine = heads.BertForPreTraining(config).apply({"params": params}, *flax_args(inputs))
    close(theirs.prediction_logits, mine["mlm_logits"])
    close(theirs.seq_relationship_logits, mine["nsp_logits"])

    # The export is itself a checkpoint this project starts from, with the same tokenizer.
    again = pretrained.load(str(out))
    assert again.tokenizer.fingerprint() == tokenizer.fingerprint()
    for path, value in traverse_util.flatten_dict(params).items():
        np.testing.assert_array_equal(traverse_util.flatten_dict(again.params)[path], value)


def test_unigram_and_bpe_tokenizers_split_text_as_ours(shared_data, wiki_text, tmp_path):
    """Both SentencePiece model types, with and without byte fallback, on unseen text."""
    from bert.convert import hf_tokenizer

    training = _sentences(shared_data / "wikipedia" / "AA" / "wiki_00", 20000)
    for model_type, byte_fallback in (("bpe", False), ("unigram", True), ("bpe", True)):
        name = f"{model_type}-{byte_fallback}"
        tokenizer = tokenizers.train_sentencepiece(
            tmp_path / name / "sp", 1000, sentences=training, model_type=model_type,
            byte_fallback=byte_fallback, character_coverage=0.98, num_threads=2,
        )  # fmt: skip
        out = tmp_path / name / "hf"
        out.mkdir()
        hf_tokenizer.write_tokenizer(tokenizer, out, SEQ)
        loaded = transformers.AutoTokenizer.from_pretrained(out)
        for text in EDGE_CASES + wiki_text[:1000]:
            want, _ = tokenizer.build_inputs(tokenizer.encode_ids(text))
            assert loaded(text)["input_ids"] == want, (name, text)


@pytest.mark.parametrize("vocab", ["bert-base-uncased-vocab.txt", "bert-base-cased-vocab.txt"])
def test_wordpiece_tokenizers_export_as_bert_tokenizers(vocab, shared_data, wiki_text, tmp_path):
    """A workdir trained with Google's vocab.txt: HF's BertTokenizerFast gives our ids."""
    from bert.convert import hf_tokenizer

    tokenizer = tokenizers.load_tokenizer(shared_data / "vocab" / vocab)
    hf_tokenizer.write_tokenizer(tokenizer, tmp_path, 512)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "BertTokenizerFast"
    assert loaded.do_lower_case == ("uncased" in vocab)
    for text in EDGE_CASES + wiki_text[:1000]:
        want, _ = tokenizer.build_inputs(tokenizer.encode_ids(text))
        assert loaded(text)["input_ids"] == want, (vocab, text)
    assert (tmp_path / "vocab.txt").read_text() == (shared_data / "vocab" / vocab).read_text()


@pytest.mark.full
def test_glue_workdir_exports_sequence_classification(glue_run, wiki_text, tmp_path):
    out = export(glue_run, tmp_path / "hf")
    params, config, tokenizer = ours(glue_run)
    hf_config = json.loads((out / "config.json").read_text())
    labels = glue.get_task("mrpc").labels
    assert hf_config["id2label"] == {str(i): name for i, name in enumerate(labels)}
    assert hf_config["problem_type"] == "single_label_classification"
    model = load_hf(
        transformers.AutoModelForSequenceClassification, out, "BertForSequenceClassification"
    )
    assert model.config.num_labels == len(labels)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    texts = short(tokenizer, wiki_text[1000:], 40)
    first, second = texts[0::2], texts[1::2]
    inputs = our_batch(tokenizer, first, second)
    assert batch(hf_tokenizer, first, second)["input_ids"].tolist() == inputs["input_ids"].tolist()
    with torch.no_grad():
        theirs = model(**torch_inputs(inputs)).logits
    mine = heads.BertForSequenceClassification(config, len(labels)).apply(
        {"params": params}, *flax_args(inputs)
    )
    close(theirs, mine)


@pytest.mark.full
def test_regression_ner_and_squad_workdirs_export(shared_data, pretrained_run, wiki_text, tmp_path):
    """STS-B as a one-output regression, NER with its tag names, SQuAD as question answering:
    each with every tensor used and logits equal to ours."""
    stsb = _finetune(glue_config.get_config("task=stsb"), pretrained_run)
    stsb.data_dir, stsb.predict_splits = str(shared_data / "glue" / "STS-B"), ()
    glue_job.run(stsb, str(stsb_dir := tmp_path / "stsb"))
    ner = _finetune(ner_config.get_config(), pretrained_run)
    ner.data_dir = str(shared_data / "conll2003")
    ner_job.run(ner, str(ner_dir := tmp_path / "ner"))
    squad = _finetune(squad_config.get_config("version=1.1"), pretrained_run)
    data = json.loads((shared_data / "squad" / "dev-v1.1.json").read_text())
    data["data"] = data["data"][:1]
    (tmp_path / "squad.json").write_text(json.dumps(data))
    squad.train_file = squad.predict_file = str(tmp_path / "squad.json")
    squad.doc_stride, squad.max_query_length = 32, 16
    squad_job.run(squad, str(squad_dir := tmp_path / "squad"))

    cases = [
        (stsb_dir, "AutoModelForSequenceClassification", "BertForSequenceClassification"),
        (ner_dir, "AutoModelForTokenClassification", "BertForTokenClassification"),
        (squad_dir, "AutoModelForQuestionAnswering", "BertForQuestionAnswering"),
    ]
    for workdir, auto_class, architecture in cases:
        out = export(workdir, tmp_path / f"{workdir.name}-hf")
        model = load_hf(getattr(transformers, auto_class), out, architecture)
        params, config, tokenizer = ours(workdir)
        inputs = our_batch(tokenizer, short(tokenizer, wiki_text[2000:], 16))
        with torch.no_grad():
            theirs = model(**torch_inputs(inputs))
        args = flax_args(inputs)
        if architecture == "BertForQuestionAnswering":
            start, end = heads.BertForQuestionAnswering(config).apply({"params": params}, *args)
            close(theirs.start_logits, start)
            close(theirs.end_logits, end)
            continue
        num_labels = params["classifier"]["bias"].shape[0]
        module = getattr(heads, architecture)(config, num_labels)
        close(theirs.logits, module.apply({"params": params}, *args))
        hf_config = json.loads((out / "config.json").read_text())
        if workdir == stsb_dir:
            assert hf_config["problem_type"] == "regression" and model.config.num_labels == 1
        else:
            trained_on = ner_tasks.read_conll(shared_data / "conll2003" / "train.txt")[:32]
            tags = list(model.config.id2label.values())
            assert tags == ner_tasks.label_list(trained_on) and len(tags) == num_labels


def test_step_flag_picks_a_checkpoint_and_bad_input_is_one_line(pretrained_run, tmp_path, capsys):
    out = export(pretrained_run, tmp_path / "step2", "--step=2")
    params, config, _ = ours(pretrained_run, 2)
    model = load_hf(transformers.AutoModelForPreTraining, out, "BertForPreTraining")
    word_embeddings = model.bert.embeddings.word_embeddings.weight.detach().numpy()
    np.testing.assert_array_equal(word_embeddings, params["bert"]["embeddings"]["word_embeddings"])
    latest, _ = checkpoints.load_params(pretrained_run)
    assert not np.array_equal(word_embeddings, latest["bert"]["embeddings"]["word_embeddings"])

    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    cases = [
        ([str(pretrained_run), str(tmp_path / "a"), "--to=hf", "--step=7"],
         "no checkpoint at step 7 (saved: 2, 3)"),
        ([str(empty), str(tmp_path / "b"), "--to=hf"], "no complete checkpoint"),
        ([str(tmp_path), str(tmp_path / "c"), "--to=hf"], "not a BERT checkpoint directory"),
        ([str(pretrained_run), str(tmp_path / "d"), "--to=orbax"], "converts --to=hf only"),
        ([str(pretrained_run), str(tmp_path / "e"), "--to=hf", "--push_to_hub=a/b/c"],
         "Repo id must be in the form"),
    ]  # fmt: skip
    capsys.readouterr()
    for argv, message in cases:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not pathlib.Path(argv[1]).exists()


def test_push_to_hub_uploads_the_exported_directory(pretrained_run, tmp_path):
    """Through huggingface_hub's real client against a local fake Hub (no network here)."""
    hub = FakeHub()
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.endpoint,
           "HF_TOKEN": "hf_fake", "HF_HOME": str(tmp_path / "hf_home")}  # fmt: skip
    out = tmp_path / "hf"
    args = ["-m", "bert.convert", str(pretrained_run), str(out), "--to=hf"]
    try:
        result = subprocess.run(
            [sys.executable, *args, "--push_to_hub=org/tiny-bert"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        hub.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.repos == [("org/tiny-bert", "Bearer hf_fake")] and not hub.unknown
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert hub.files == written and "model.safetensors" in written


def test_push_to_hub_offline_is_one_line(pretrained_run, tmp_path, capsys):
    """HF_HUB_OFFLINE=1 (as the tests run): the export is written, the upload refused."""
    argv = [str(pretrained_run), str(tmp_path / "hf"), "--to=hf", "--push_to_hub=org/x"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --push_to_hub=org/x: ") and len(err.strip().splitlines()) == 1
    assert (tmp_path / "hf" / "model.safetensors").is_file()
