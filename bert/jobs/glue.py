"""The GLUE fine-tuning job (`config.task = "glue"`, configs/glue.py): any of the nine tasks,
from the GLUE TSV download or TFDS, evaluated on the dev sets and predicted on the test sets
in the GLUE server's submission format."""

import numpy as np
from absl import logging

from bert import losses
from bert.finetuning import finetune
from bert.finetuning.spec import EvalSet, Spec
from bert.heads import BertForSequenceClassification
from bert.jobs import settings
from bert.pretrained import Pretrained
from bert.tasks import glue, glue_tfds, metrics
from bert.tasks.features import ENCODER_INPUTS
from util import paths
from util.errors import UserError


def _examples(task: glue.Task, config, split: str) -> list[glue.Example]:
    """`split` from config.data_dir (GLUE TSVs), or from TFDS when data_dir is empty."""
    if not config.data_dir:
        return glue_tfds.load_split(task, split, config.tfds_data_dir or None)
    path = paths.path(config.data_dir) / task.splits.get(split, f"{split}.tsv")
    if split in task.splits and not path.is_file():
        raise UserError(
            f"{path}: no such file (config.data_dir is the {task.name} folder of the GLUE "
            f"download, holding {', '.join(task.splits.values())})"
        )
    examples = glue.read_split(task, config.data_dir, split)
    if not examples and split in task.splits:
        raise UserError(f"{path}: no examples (an empty file, or its header alone)")
    return examples


def predictions_of(task: glue.Task, outputs: np.ndarray) -> np.ndarray:
    """Class ids (argmax) or, for regression, the scores."""
    return outputs[:, 0] if task.is_regression else np.argmax(outputs, axis=-1)


def _eval_set(task, config, split, examples, features, out_dir) -> EvalSet:
    labeled = split not in task.submission_names
    inputs = {k: features[k] for k in ENCODER_INPUTS}

    def finish(outputs: np.ndarray, write: bool) -> dict[str, float]:
        predictions = predictions_of(task, outputs)
        if write:
            name = f"{split}.tsv" if labeled else task.submission_names[split]
            glue.write_submission(out_dir / name, task, examples, predictions, labeled)
        if not labeled:
            return {}
        return metrics.compute(task.metrics, predictions, features["label"])

    return EvalSet(split, inputs, finish)


def run(config, workdir: str, encoder: Pretrained | None = None) -> dict:
    """Fine-tunes and evaluates; returns {"step": ..., split: {metric: value}}.

    Args:
      encoder: the encoder to start from, in memory; None: config.init_from's.
    """
    task = glue.get_task(config.glue_task)
    pretrained = settings.encoder(config, encoder)
    tokenizer = pretrained.tokenizer

    def features(split: str, limit: int) -> tuple[list[glue.Example], dict[str, np.ndarray]]:
        examples = _examples(task, config, split)
        examples = settings.limited(examples, limit, config)
        feats = glue.convert_examples_to_features(examples, task, tokenizer, config.max_seq_length)
        logging.info("%s %s: %d examples", task.name, split, len(examples))
        return examples, feats

    _, train_features = features("train", config.train_limit)
    out_dir = paths.path(workdir) / "predictions"
    evals = []
    for split in (*config.eval_splits, *config.predict_splits):
        examples, feats = features(split, config.eval_limit)
        evals.append(_eval_set(task, config, split, examples, feats, out_dir))

    def loss(logits, batch):
        if task.is_regression:
            return losses.regression_sums(logits, batch["label"])
        return losses.classification_sums(logits, batch["label"])

    model = BertForSequenceClassification(pretrained.config, task.num_labels)
    spec = Spec(
        f"glue/{task.name}", model, loss, ("label",), train_features, evals, labels=task.labels
    )
    return finetune.run(spec, pretrained, settings.finetuning(config), workdir)
