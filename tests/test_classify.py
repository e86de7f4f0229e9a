"""The classification job on the user's own files (configs/classify.py, bert/jobs/classify.py):
SST-2 read as a plain CSV or JSONL file predicts what the GLUE job predicts on the GLUE folder;
the multi-label and regression heads, exported, equal transformers' BertForSequenceClassification
with that problem_type (loss and logits); the scores equal scikit-learn's; bad rows and settings
are one line naming the file, line or field. And python -m bert.predict on these workdirs gives
the job's own dev predictions, and on their export transformers' text-classification pipeline's
labels and scores (within 1e-5). Predicting tags: tests/test_tag.py; answers:
tests/test_finetune_jobs.py."""

import csv
import json
import pathlib

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import torch
import transformers

from bert import predict, pretrained
from bert.export import workdirs
from bert.heads import BertForSequenceClassification
from bert.jobs import classify as classify_job
from bert.jobs import glue as glue_job
from bert.jobs import settings
from bert.tasks import class_report, classification, glue, ner
from configs import classify as classify_config
from configs import glue as glue_config
from util.errors import UserError

TRAIN_ROWS, DEV_ROWS = 256, 96


def quick(config, init_from="", steps=6, seq=64):
    """A short run: few steps, one length bucket (one compiled shape), a checkpoint at the end
    only."""
    config.init_from = str(init_from)
    config.max_seq_length = seq
    config.pad_to_multiple_of = seq
    config.eval_batch_size = 32
    config.train.batch_size = 16
    config.train.steps = steps
    config.train.learning_rate = 1e-3
    config.train.log_every = 2
    config.train.checkpoint_every = steps
    config.train.async_checkpoints = False
    return config


def _write(path: pathlib.Path, header: list[str], rows: list[list], file_format: str) -> str:
    if file_format == "jsonl":
        lines = [json.dumps(dict(zip(header, row, strict=True))) + "\n" for row in rows]
        path.write_text("".join(lines), "utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="," if file_format == "csv" else "\t")
            writer.writerows([header, *rows])
    return str(path)


@pytest.fixture(scope="module")
def sst2_subset(shared_data, tmp_path_factory):
    """The first rows of SST-2 train and dev as a GLUE folder of their own."""
    folder = tmp_path_factory.mktemp("sst2_subset")
    source = shared_data / "glue" / "SST-2"
    for name, rows in (("train.tsv", TRAIN_ROWS), ("dev.tsv", DEV_ROWS)):
        lines = (source / name).read_text("utf-8").splitlines(keepends=True)
        (folder / name).write_text("".join(lines[: rows + 1]), "utf-8")
    return folder


def _sst2_files(folder: pathlib.Path, subset: pathlib.Path, file_format: str, config) -> None:
    """The subset's train and dev rows as a user's files would hold them (the label first, a
    number in JSON), named in `config`."""
    for split, field in (("train", "train_file"), ("dev", "eval_file")):
        rows = glue.read_tsv(subset / f"{split}.tsv")[1:]
        rows = [[int(label) if file_format == "jsonl" else label, text] for text, label in rows]
        config[field] = _write(folder / f"{split}.{file_format}", ["label", "sentence"], rows,
                               file_format)  # fmt: skip
    config.text_columns = "sentence"


@pytest.fixture(scope="module")
def sst2_runs(sst2_subset, tiny_hf, tmp_path_factory):
    """The GLUE job on the subset's folder ("glue") and the classification job on the same rows
    as CSV ("ours", with dev.csv beside it), both from the tiny checkpoint."""
    folder = tmp_path_factory.mktemp("sst2_runs")
    glue_run = quick(glue_config.get_config("task=sst2"), tiny_hf)
    glue_run.data_dir, glue_run.predict_splits = str(sst2_subset), ()
    glue_job.run(glue_run, str(folder / "glue"))
    config = quick(classify_config.get_config(), tiny_hf)
    _sst2_files(folder, sst2_subset, "csv", config)
    classify_job.run(config, str(folder / "ours"))
    return folder


def _same_predictions(glue_dir: pathlib.Path, ours: pathlib.Path) -> None:
    theirs = glue.read_tsv(glue_dir / "predictions" / "dev.tsv")[1:]
    lines = (ours / "predictions" / "dev.jsonl").read_text("utf-8").splitlines()
    predicted = [json.loads(line)["label"] for line in lines]
    assert predicted == [label for _, label in theirs] and len(predicted) == DEV_ROWS
    glue_accuracy = json.loads((glue_dir / "eval_results.json").read_text())["dev"]["accuracy"]
    assert json.loads((ours / "eval_results.json").read_text())["dev"]["accuracy"] == glue_accuracy


def test_sst2_as_a_csv_file_predicts_as_the_glue_job(sst2_runs):
    _same_predictions(sst2_runs / "glue", sst2_runs / "ours")
    confusion = (sst2_runs / "ours" / "predictions" / "dev_confusion.tsv").read_text("utf-8")
    assert confusion.splitlines()[0] == "true\\predicted\t0\t1"


@pytest.mark.full
def test_sst2_as_a_jsonl_file_predicts_as_the_glue_job(sst2_runs, sst2_subset, tiny_hf, tmp_path):
    config = quick(classify_config.get_config(), tiny_hf)
    _sst2_files(tmp_path, sst2_subset, "jsonl", config)
    classify_job.run(config, str(tmp_path / "ours"))
    _same_predictions(sst2_runs / "glue", tmp_path / "ours")


def _entity_types(shared_data, rows: int) -> list[list]:
    """CoNLL-2003 sentences with the entity types they mention: a real multi-label task."""
    sentences = ner.read_conll(shared_data / "conll2003" / "train.txt")[:rows]
    out = []
    for s in sentences:
        types = sorted({tag[2:] for tag in s.tags if tag != "O"})
        out.append([" ".join(s.words), "|".join(types)])
    return out


def _hf_outputs(directory: pathlib.Path, batch: dict, labels: np.ndarray):
    model = transformers.BertForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
            token_type_ids=torch.tensor(batch["segment_ids"], dtype=torch.long),
            attention_mask=torch.tensor(batch["input_mask"], dtype=torch.long),
            labels=torch.tensor(labels),
        )
    return model.config.problem_type, out.logits.numpy(), float(out.loss)


def _trained(shared_data, folder: pathlib.Path, problem_type: str):
    """(config, workdir): a random tiny encoder (init_from empty) trained by the job on CoNLL
    sentences' entity types (multi_label) or GLUE STS-B's pairs and scores (regression), its
    workdir exported to folder / "hf"."""
    config = quick(classify_config.get_config("size=tiny"))
    config.tokenizer = str(shared_data / "vocab" / "bert-base-uncased-vocab.txt")
    if problem_type == "multi_label":
        rows = _entity_types(shared_data, 300)
        config.train_file = _write(folder / "train.csv", ["text", "types"], rows, "csv")
        config.label_column, config.threshold = "types", 0.45
    else:  # a text pair and its score, from GLUE's STS-B file as it is
        config.train_file = str(shared_data / "glue" / "STS-B" / "dev.tsv")
        config.text_columns, config.label_column = "sentence1,sentence2", "score"
        config.train_limit = 300
    config.problem_type, config.dev_fraction = problem_type, 0.2
    results = classify_job.run(config, str(folder / "run"))
    assert ("f1_micro" if problem_type == "multi_label" else "spearman") in results["dev"]
    exported = workdirs.export_workdir(folder / "run", folder / "hf")
    assert exported.architecture == "BertForSequenceClassification"
    return config, folder / "run"


@pytest.fixture(scope="module")
def multi_label_run(shared_data, tmp_path_factory):
    return _trained(shared_data, tmp_path_factory.mktemp("multi_label"), "multi_label")


def _heads_equal_transformers(config, workdir: pathlib.Path) -> None:
    """Our head and transformers' class with that problem_type, on the exported weights and a
    batch of the training rows: the same logits and loss."""
    problem_type = config.problem_type
    loaded = pretrained.load(str(workdir))
    columns = classify_job.file_columns(config)
    examples = classification.read_examples(config.train_file, columns)[:24]
    batch = classification.to_features(examples, loaded.labels, problem_type,
                                       loaded.tokenizer, 64)  # fmt: skip
    model = BertForSequenceClassification(loaded.config, max(len(loaded.labels), 1))
    logits = np.asarray(model.apply({"params": loaded.params}, batch["input_ids"],
                                    batch["segment_ids"], batch["input_mask"]))  # fmt: skip
    total, count = classify_job._loss(problem_type)(logits, batch)["loss"]
    kind, hf_logits, hf_loss = _hf_outputs(workdir.parent / "hf", batch, batch["label"])
    assert kind == workdirs.HF_PROBLEM_TYPES[problem_type]
    np.testing.assert_allclose(logits, hf_logits, atol=1e-5, rtol=0)
    assert float(total) / float(count) == pytest.approx(hf_loss, abs=1e-5)


def test_the_exported_multi_label_head_equals_transformers(multi_label_run):
    """The job trained a random tiny encoder; the workdir exports with problem_type
    multi_label_classification, and transformers' class computes our logits and loss."""
    config, workdir = multi_label_run
    _heads_equal_transformers(config, workdir)
    assert pretrained.load(str(workdir)).labels == ("LOC", "MISC", "ORG", "PER")


@pytest.mark.full
def test_the_exported_regression_head_equals_transformers(shared_data, tmp_path):
    _heads_equal_transformers(*_trained(shared_data, tmp_path, "regression"))


def test_single_label_report_equals_scikit_learn():
    rng = np.random.default_rng(0)
    gold, predicted = rng.integers(0, 4, 500), rng.integers(0, 3, 500)  # class 3 never predicted
    names = ("a", "b", "c", "d")
    ours = class_report.single_label(predicted, gold, names)
    labels = list(range(4))
    assert ours["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(gold, predicted))
    for average in ("macro", "micro"):
        want = sklearn.metrics.f1_score(gold, predicted, labels=labels, average=average,
                                        zero_division=0)  # fmt: skip
        assert ours[f"f1_{average}"] == pytest.approx(want)
    p, r, f, _ = sklearn.metrics.precision_recall_fscore_support(
        gold, predicted, labels=labels, zero_division=0
    )
    for i, name in enumerate(names):
        assert (ours[f"precision/{name}"], ours[f"recall/{name}"], ours[f"f1/{name}"]) == (
            pytest.approx(p[i]), pytest.approx(r[i]), pytest.approx(f[i]))  # fmt: skip
    np.testing.assert_array_equal(
        class_report.confusion_matrix(predicted, gold, 4),
        sklearn.metrics.confusion_matrix(gold, predicted, labels=labels),
    )


def test_multi_label_and_regression_reports_equal_scikit_learn_and_scipy():
    rng = np.random.default_rng(1)
    gold, predicted = rng.random((400, 5)) < 0.3, rng.random((400, 5)) < 0.25
    ours = class_report.multi_label(predicted, gold, tuple("vwxyz"))
    assert ours["exact_match"] == pytest.approx(sklearn.metrics.accuracy_score(gold, predicted))
    for average in ("macro", "micro"):
        want = sklearn.metrics.f1_score(gold, predicted, average=average, zero_division=0)
        assert ours[f"f1_{average}"] == pytest.approx(want)
    f = sklearn.metrics.f1_score(gold, predicted, average=None, zero_division=0)
    assert [ours[f"f1/{n}"] for n in "vwxyz"] == pytest.approx(list(f))
    scores, truth = rng.normal(size=300), rng.normal(size=300)
    report = class_report.regression(scores, truth)
    assert report["pearson"] == pytest.approx(scipy.stats.pearsonr(scores, truth)[0])
    assert report["spearman"] == pytest.approx(scipy.stats.spearmanr(scores, truth)[0])
    assert report["mse"] == pytest.approx(sklearn.metrics.mean_squared_error(truth, scores))


def test_labels_read_from_any_format_and_held_out_rows_are_seeded(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"text": [f"row {i}" for i in range(50)], "tags": [["x", "y"][: i % 3] for i in
                                                              range(50)]}  # fmt: skip
    pq.write_table(pa.table(rows), tmp_path / "rows.parquet")
    columns = classification.Columns(("text",), ("tags",), "multi_label")
    examples = classification.read_examples(str(tmp_path / "rows.parquet"), columns)
    assert [e.label for e in examples[:3]] == [(), ("x",), ("x", "y")]
    assert classification.label_names(examples, "", "multi_label") == ("x", "y")
    lines = "".join(json.dumps({"t": f"r{i}", "y": i % 12}) + "\n" for i in range(60))
    (tmp_path / "rows.jsonl").write_text(lines)
    single = classification.Columns(("t",), ("y",), "single_label")
    examples = classification.read_examples(str(tmp_path / "rows.jsonl"), single)
    names = classification.label_names(examples, "", "single_label")
    assert names == tuple(str(i) for i in range(12))  # 2 before 10
    train, dev, test = settings.hold_out(examples, [0.2, 0.1], seed=7)
    again = settings.hold_out(examples, [0.2, 0.1], seed=7)
    assert [len(train), len(dev), len(test)] == [42, 12, 6] and again == [train, dev, test]
    assert settings.hold_out(examples, [0.2, 0.1], seed=8) != again
    wheres = [e.where for part in (train, dev, test) for e in part]
    assert sorted(wheres) == sorted(e.where for e in examples)  # disjoint, every row once
    assert [e.where for e in dev] == [e.where for e in examples if e in dev]  # file order


BAD_ROWS = [
    ("label,text\n1,good\n,bad\n", "single_label", r"train.csv:3: label column 'label' holds ''"),
    ("label,text\n1,good\n0,\n", "single_label", r"train.csv:3: column 'text' is empty"),
    ("label,text\n1.5,good\nx,bad\n", "regression", r"train.csv:3: .* holds 'x', not a number"),
    ("label,words\n1,good\n", "single_label", r"train.csv:1: no column 'text'; the header"),
    ("label,text\n1,good\n1\n", "single_label", r"train.csv:3: 1 fields, column 1"),
]


@pytest.mark.parametrize("content, problem_type, message", BAD_ROWS)
def test_bad_rows_name_file_and_line(content, problem_type, message, tmp_path):
    (tmp_path / "train.csv").write_text(content)
    config = classify_config.get_config()
    config.train_file, config.problem_type = str(tmp_path / "train.csv"), problem_type
    with pytest.raises(UserError, match=message):
        classify_job.read_splits(config, classify_job.file_columns(config))


def test_bad_settings_and_unknown_dev_labels_are_one_line(tmp_path, shared_data):
    (tmp_path / "train.csv").write_text("label,text\npos,good\nneg,bad\n")
    (tmp_path / "dev.csv").write_text("label,text\npos,fine\nmeh,so so\n")
    config = classify_config.get_config()
    config.train_file, config.eval_file = str(tmp_path / "train.csv"), str(tmp_path / "dev.csv")
    splits = classify_job.read_splits(config, classify_job.file_columns(config))
    names = classification.label_names(splits["train"], "", "single_label")
    assert names == ("neg", "pos")
    with pytest.raises(UserError, match=r"dev.csv:3: label 'meh' is not one of the classes"):
        classification.label_array(splits["dev"], names, "single_label")
    for field, value, message in (
        ("problem_type", "multiclass", r"config.problem_type='multiclass': expected one of"),
        ("text_columns", "a,b,c", r"config.text_columns names 3 columns"),
        ("label_column", "a,b", r"config.label_column names 2 columns"),
        ("labels", "pos,pos", r"config.labels='pos,pos': names must be distinct"),
    ):
        bad = classify_config.get_config()
        bad.train_file, bad[field] = config.train_file, value
        with pytest.raises(UserError, match=message):
            columns = classify_job.file_columns(bad)
            rows = classify_job.read_splits(bad, columns)["train"]
            classification.label_names(rows, bad.labels, bad.problem_type)
    empty = quick(classify_config.get_config("size=tiny"))
    empty.train_file = config.train_file
    with pytest.raises(UserError, match=r"config.init_from is empty, so the encoder starts"):
        classify_job.run(empty, str(tmp_path / "run"))


# python -m bert.predict on the workdirs above (bert/predict.py): the job's own dev predictions,
# and transformers' text-classification pipeline on the exported directory.


def _dev_texts(folder: pathlib.Path) -> list[str]:
    with open(folder / "dev.csv", encoding="utf-8", newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f)]


def _dev_rows(folder: pathlib.Path) -> list[dict]:
    lines = (folder / "ours" / "predictions" / "dev.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _pipeline_scores(directory: pathlib.Path, texts) -> list[dict[str, float]]:
    classifier = transformers.pipeline("text-classification", model=str(directory), top_k=None,
                                       device=-1)  # fmt: skip
    return [{r["label"]: r["score"] for r in rows} for rows in classifier(texts)]


def test_predict_gives_the_jobs_dev_predictions(sst2_runs):
    ours = predict.Predictor(str(sst2_runs / "ours"))(_dev_texts(sst2_runs))
    job = _dev_rows(sst2_runs)
    assert [r["label"] for r in ours] == [r["label"] for r in job] and len(ours) == DEV_ROWS
    for mine, theirs in zip(ours, job, strict=True):
        assert mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-6)
        assert mine["score"] == max(mine["probabilities"].values())


def test_predict_equals_transformers_pipeline_on_the_export(sst2_runs, multi_label_run, tmp_path):
    """Single-label (softmax) from the SST-2 workdir and multi-label (a sigmoid per class, the
    classes over the job's threshold) from the entity-types workdir."""
    workdirs.export_workdir(sst2_runs / "ours", tmp_path / "hf")
    texts = _dev_texts(sst2_runs)[:40]
    ours = predict.Predictor(str(sst2_runs / "ours"))(texts)
    for mine, theirs in zip(ours, _pipeline_scores(tmp_path / "hf", texts), strict=True):
        assert mine["probabilities"] == pytest.approx(theirs, abs=1e-5)
        assert mine["label"] == max(theirs, key=theirs.get)
    config, workdir = multi_label_run
    texts = [row[0] for row in _entity_types_texts(config)]
    ours = predict.Predictor(str(workdir))(texts)
    for mine, theirs in zip(ours, _pipeline_scores(workdir.parent / "hf", texts), strict=True):
        assert mine["probabilities"] == pytest.approx(theirs, abs=1e-5)
        assert mine["labels"] == [n for n, p in mine["probabilities"].items() if p > 0.45]


def _entity_types_texts(config) -> list[list[str]]:
    with open(config.train_file, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))[1:31]


def test_the_predict_command_writes_json_lines_and_names_bad_input(sst2_runs, tmp_path, capsys):
    workdir = str(sst2_runs / "ours")
    source = tmp_path / "in.txt"
    source.write_text("a gorgeous , witty , seductive movie .\n\nit 's a mess .\n")
    out = tmp_path / "out.jsonl"
    assert predict.main([workdir, f"--input={source}", f"--output={out}"]) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    direct = predict.Predictor(workdir)(
        ["a gorgeous , witty , seductive movie .", "it 's a mess ."]
    )
    assert written == json.loads(json.dumps(direct))
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    assert predict.main([workdir, f"--input={jsonl}"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["error: input 2: a JSON object needs a 'text' string"]
    source.write_text("one\ttwo\tthree\n")
    assert predict.main([workdir, f"--input={source}"]) == 2
    assert "in.txt:1: 3 tab-separated fields" in capsys.readouterr().err
