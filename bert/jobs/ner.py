"""The CoNLL-2003 NER job (`config.task = "ner"`, configs/ner.py): token tagging with the label
on each word's first sub-token, scored with entity-level F1 (conlleval rules), predictions
written as `word gold predicted` columns. Training rows cut long sentences (counted in one
warning); evaluation windows every `config.window_stride` sub-tokens score every word."""

import numpy as np
from absl import logging

from bert import losses
from bert.finetuning import finetune
from bert.finetuning.spec import EvalSet, Spec
from bert.heads import BertForTokenClassification
from bert.jobs import settings
from bert.tasks import metrics, ner
from bert.tasks.features import ENCODER_INPUTS
from util import paths
from util.errors import UserError


def _sentences(config, split: str) -> list[ner.Sentence]:
    if not config.data_dir:
        raise UserError("config.data_dir is empty: give the folder of CoNLL-2003 files")
    path = paths.path(config.data_dir) / f"{split}.txt"
    if not path.is_file():
        raise UserError(f"{path}: no such file (split {split!r} in config.data_dir)")
    sentences = ner.read_conll(path, tag_column=config.tag_column)
    if not sentences:
        raise UserError(f"{path}: no sentences (an empty file, or -DOCSTART- lines alone)")
    limit = config.train_limit if split == config.train_split else config.eval_limit
    return settings.limited(sentences, limit, config)


def scores(predicted: list[list[str]], sentences: list[ner.Sentence]) -> dict[str, float]:
    """Entity-level precision/recall/F1 and token accuracy, plus F1 per entity type."""
    gold = [s.tags for s in sentences]
    result = metrics.conll_scores(predicted, gold)
    for entity_type, values in metrics.conll_scores_per_type(predicted, gold).items():
        result[f"f1_{entity_type}"] = values["f1"]
    return result


def _warn_cut(sentences: list[ner.Sentence], train: dict, max_seq_length: int) -> None:
    """One warning line when training rows cut words off long sentences."""
    cut_sentences, cut_words = ner.count_cut(sentences, train)
    if cut_words:
        logging.warning(
            "%d of %d training sentences exceed max_seq_length=%d ([CLS] and [SEP] included): "
            "%d words were cut and train nothing (raise config.max_seq_length to keep them; "
            "evaluation windows score every word)",
            cut_sentences,
            len(sentences),
            max_seq_length,
            cut_words,
        )


def run(config, workdir: str) -> dict:
    """Fine-tunes and evaluates; returns {"step": ..., split: {metric: value}}."""
    train = _sentences(config, config.train_split)
    return tag_and_score(config, workdir, train, {s: _sentences(config, s) for s in
                                                  config.eval_splits})  # fmt: skip


def tag_and_score(
    config, workdir: str, train_sentences: list[ner.Sentence], evaluated: dict[str, list]
) -> dict:
    """Fine-tunes a tagger on `train_sentences` and scores it on each split of `evaluated`
    (split -> sentences), writing their predictions; the NER and tag jobs' common part."""
    pretrained = settings.encoder(config)
    tokenizer = pretrained.tokenizer
    labels = list(config.labels) or ner.label_list(train_sentences)
    logging.info("tags: %s", labels)

    train = ner.convert_sentences_to_features(
        train_sentences, labels, tokenizer, config.max_seq_length
    )
    _warn_cut(train_sentences, train, config.max_seq_length)
    out_dir = paths.path(workdir) / "predictions"
    evals = []
    for split, sentences in evaluated.items():
        feats = ner.window_features(
            sentences, labels, tokenizer, config.max_seq_length, config.window_stride
        )

        def finish(logits, write, sentences=sentences, feats=feats, split=split):
            predicted = ner.predictions_to_tags(
                np.argmax(logits, axis=-1), feats, sentences, labels
            )
            if write:
                ner.write_conll_predictions(out_dir / f"{split}.txt", sentences, predicted)
            return scores(predicted, sentences)

        inputs = {k: feats[k] for k in ENCODER_INPUTS}
        evals.append(EvalSet(split, inputs, finish))

    model = BertForTokenClassification(pretrained.config, len(labels))
    spec = Spec(
        "ner",
        model,
        lambda logits, batch: losses.classification_sums(logits, batch["label"]),
        ("label",),
        train,
        evals,
        labels=tuple(labels),
        pack_fill={"label": ner.IGNORE},
    )
    return finetune.run(spec, pretrained, settings.finetuning(config), workdir)
