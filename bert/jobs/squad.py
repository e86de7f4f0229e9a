"""The SQuAD job (`config.task = "squad"`, configs/squad.py): span extraction over sliding
windows, n-best decoding, the v2.0 null-answer threshold, the official exact match and F1, and
`predictions.json` (plus `null_odds.json` and `nbest_predictions.json`) as SQuAD expects."""

import dataclasses
import json

from absl import logging

from bert import losses
from bert.finetuning import finetune
from bert.finetuning.spec import EvalSet, Spec
from bert.heads import BertForQuestionAnswering
from bert.jobs import settings
from bert.tasks import metrics, squad
from bert.tasks.features import ENCODER_INPUTS
from util import atomic, paths
from util.errors import UserError


def read(
    path: str, field: str, is_training: bool, limit: int, config
) -> tuple[squad.SquadSet, dict]:
    """The questions of a SQuAD JSON file (`limit` of them, as config.limit_by picks), and the
    parsed file itself."""
    if not path:
        raise UserError(f"config.{field} is empty: give a SQuAD JSON file")
    squad_set = squad.read_squad(path, is_training=is_training)
    # read_squad logs the questions it skips (answer not at answer_start), with their count.
    examples = settings.limited(squad_set.examples, limit, config)
    with paths.open_text(path, "utf-8-sig") as f:  # as read_squad reads it: a BOM is fine
        dataset = json.load(f)
    return dataclasses.replace(squad_set, examples=examples), dataset


def restrict(dataset: dict, qids: set[str]) -> dict:
    """The dataset JSON with only the questions in `qids` (to score a slice of it)."""
    articles = []
    for article in dataset["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = [qa for qa in paragraph["qas"] if qa["id"] in qids]
            if qas:
                paragraphs.append({**paragraph, "qas": qas})
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    return {**dataset, "data": articles}


def _has_answers(dataset: dict) -> bool:
    return any(
        "answers" in qa or "is_impossible" in qa
        for article in dataset["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    )


def _nbest_json(nbest: dict[str, list[squad.Candidate]]) -> str:
    table = {
        qid: [{"text": c.text, "score": c.score} for c in cands] for qid, cands in nbest.items()
    }
    return json.dumps(table, ensure_ascii=False, indent=2)


def run(config, workdir: str) -> dict:
    """Fine-tunes and evaluates; returns {"step": ..., "dev": {metric: value}}."""
    pretrained = settings.encoder(config)
    tokenizer = pretrained.tokenizer
    window = dict(max_seq_length=config.max_seq_length, doc_stride=config.doc_stride,
                  max_query_length=config.max_query_length)  # fmt: skip
    train_set, _ = read(config.train_file, "train_file", True, config.train_limit, config)
    train_features = squad.make_features(train_set.examples, tokenizer, is_training=True, **window)
    logging.info("SQuAD train: %d questions, %d windows", len(train_set.examples),
                 len(train_features))  # fmt: skip
    train_arrays = squad.features_to_arrays(train_features)
    eval_set, dataset = read(config.predict_file, "predict_file", False, config.eval_limit, config)
    eval_features = squad.make_features(eval_set.examples, tokenizer, is_training=False, **window)
    out_dir = paths.path(workdir) / "predictions"

    def finish(outputs, write: bool) -> dict[str, float]:
        start_logits, end_logits = outputs
        predictions, null_odds, nbest = squad.decode_predictions(
            eval_set.examples,
            eval_features,
            start_logits,
            end_logits,
            n_best_size=config.n_best_size,
            max_answer_length=config.max_answer_length,
            version_2_with_negative=config.version_2_with_negative,
            null_score_diff_threshold=config.null_score_diff_threshold,
        )
        if write:
            squad.write_predictions(
                out_dir, predictions, null_odds if config.version_2_with_negative else None
            )
            atomic.write_atomically(out_dir / "nbest_predictions.json", _nbest_json(nbest))
        if not _has_answers(dataset):
            return {}
        scored = restrict(dataset, {e.qid for e in eval_set.examples})
        results = metrics.squad_scores(predictions, scored)
        if config.version_2_with_negative:
            spans = {qid: best[0].text if best else "" for qid, best in nbest.items()}
            results.update(metrics.squad_best_null_threshold(spans, null_odds, scored))
        return results

    arrays = squad.features_to_arrays(eval_features)
    inputs = {k: arrays[k] for k in ENCODER_INPUTS}
    spec = Spec(
        "squad",
        BertForQuestionAnswering(pretrained.config),
        lambda outputs, batch: losses.span_sums(
            *outputs, batch["start_positions"], batch["end_positions"]
        ),
        ("start_positions", "end_positions"),
        train_arrays,
        [EvalSet("dev", inputs, finish, bucketed=False)],
    )
    return finetune.run(spec, pretrained, settings.finetuning(config), workdir)
