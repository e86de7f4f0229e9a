"""Predictions from a trained workdir (bert/predict.py, python -m bert.predict): on the dev file
they are the job's own dev predictions; on an exported directory, transformers' pipelines give
the same labels and scores (within 1e-5). Tagging: tests/test_tag.py; question answering:
tests/test_finetune_jobs.py."""

import csv
import json

import numpy as np
import pytest
import transformers
from test_classify import _entity_types, _write, quick

from bert import embed, predict, pretrained
from bert.export import workdirs
from bert.jobs import classify as classify_job
from bert.tasks import glue
from configs import classify as classify_config


@pytest.fixture(scope="module")
def sst2_workdir(shared_data, tiny_hf, tmp_path_factory):
    """A single-label classifier fine-tuned from the tiny checkpoint on SST-2 rows as CSV."""
    folder = tmp_path_factory.mktemp("predict_sst2")
    config = quick(classify_config.get_config(), tiny_hf)
    for split, field, rows in (("train", "train_file", 256), ("dev", "eval_file", 120)):
        read = glue.read_tsv(shared_data / "glue" / "SST-2" / f"{split}.tsv")[1 : rows + 1]
        path = folder / f"{split}.csv"
        config[field] = _write(path, ["sentence", "label"], read, "csv")
    config.text_columns = "sentence"
    classify_job.run(config, str(folder / "run"))
    return folder


def _dev_texts(workdir) -> list[str]:
    with open(workdir / "dev.csv", encoding="utf-8", newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f)]


def _dev_rows(workdir):
    lines = (workdir / "run" / "predictions" / "dev.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_predict_gives_the_jobs_dev_predictions(sst2_workdir):
    ours = predict.Predictor(str(sst2_workdir / "run"))(_dev_texts(sst2_workdir))
    job = _dev_rows(sst2_workdir)
    assert [r["label"] for r in ours] == [r["label"] for r in job] and len(ours) == 120
    for mine, theirs in zip(ours, job, strict=True):
        assert mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-6)
        assert mine["score"] == max(mine["probabilities"].values())


def _pipeline_scores(directory, texts) -> list[dict[str, float]]:
    classifier = transformers.pipeline("text-classification", model=str(directory), top_k=None,
                                       device=-1)  # fmt: skip
    return [{r["label"]: r["score"] for r in rows} for rows in classifier(texts)]


def test_exported_single_label_equals_transformers_pipeline(sst2_workdir, tmp_path):
    workdirs.export_workdir(sst2_workdir / "run", tmp_path / "hf")
    texts = _dev_texts(sst2_workdir)[:40]
    ours = predict.Predictor(str(sst2_workdir / "run"))(texts)
    for mine, theirs in zip(ours, _pipeline_scores(tmp_path / "hf", texts), strict=True):
        assert mine["probabilities"] == pytest.approx(theirs, abs=1e-5)
        assert mine["label"] == max(theirs, key=theirs.get)


def test_multi_label_equals_transformers_pipeline(shared_data, tmp_path):
    config = quick(classify_config.get_config("size=tiny"))
    config.tokenizer = str(shared_data / "vocab" / "bert-base-uncased-vocab.txt")
    rows = _entity_types(shared_data, 200)
    config.train_file = _write(tmp_path / "train.csv", ["text", "types"], rows, "csv")
    config.label_column, config.problem_type, config.threshold = "types", "multi_label", 0.45
    classify_job.run(config, str(tmp_path / "run"))
    workdirs.export_workdir(tmp_path / "run", tmp_path / "hf")
    texts = [text for text, _ in rows[:30]]
    ours = predict.Predictor(str(tmp_path / "run"))(texts)
    for mine, theirs in zip(ours, _pipeline_scores(tmp_path / "hf", texts), strict=True):
        assert mine["probabilities"] == pytest.approx(theirs, abs=1e-5)  # sigmoids
        assert mine["labels"] == [n for n, p in mine["probabilities"].items() if p > 0.45]


def test_the_command_line_writes_json_lines_and_names_bad_input(sst2_workdir, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("a gorgeous , witty , seductive movie .\n\nit 's a mess .\n")
    out = tmp_path / "out.jsonl"
    assert predict.main([str(sst2_workdir / "run"), f"--input={source}", f"--output={out}"]) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    direct = predict.Predictor(str(sst2_workdir / "run"))(
        ["a gorgeous , witty , seductive movie .", "it 's a mess ."]
    )
    assert written == json.loads(json.dumps(direct))
    source.write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    jsonl = tmp_path / "in.jsonl"
    source.rename(jsonl)
    assert predict.main([str(sst2_workdir / "run"), f"--input={jsonl}"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["error: input 2: a JSON object needs a 'text' string"]
    source.write_text("one\ttwo\tthree\n")
    assert predict.main([str(sst2_workdir / "run"), f"--input={source}"]) == 2
    assert "in.txt:1: 3 tab-separated fields" in capsys.readouterr().err


def test_an_encoder_without_a_task_head_gives_its_sentence_embeddings(tiny_hf):
    """Any other checkpoint embeds: mean pooling, normalised, as bert.embed computes it."""
    texts = ["a gorgeous movie .", "it 's a mess .", "a gorgeous movie ."]
    vectors = [r["embedding"] for r in predict.Predictor(str(tiny_hf))(texts)]
    want = embed.embed(pretrained.load(str(tiny_hf)), texts, max_seq_length=128)
    np.testing.assert_allclose(vectors, want, atol=1e-6)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-5)
    assert vectors[0] == vectors[2] and len(vectors[0]) == 32
