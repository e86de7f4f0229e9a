"""The tagging job (`config.task = "tag"`, configs/tag.py): token classification with any tag set
on the user's own files (bert/tasks/tagging.py: CoNLL columns or JSONL, IOB1/IOB2/IOBES,
character-level for text without spaces), from a checkpoint or from random weights; the
training, scoring (entity-level, conlleval's rules) and prediction files are the NER job's."""

from absl import logging

from bert.jobs import ner as ner_job
from bert.jobs import settings
from bert.tasks import tagging


def read_splits(config) -> dict[str, list]:
    """{split: sentences}: `settings.user_splits` of config's files."""

    def read(patterns: str, split: str) -> list:
        fields = (config.tokens_field, config.tags_field)
        return tagging.read_tagged(patterns, config.file_format, config.tag_column,
                                   config.tag_scheme, fields, config.tag_errors)  # fmt: skip

    return settings.user_splits(config, read, "CoNLL columns or JSONL")


def run(config, workdir: str) -> dict:
    """Fine-tunes and evaluates; returns {"step": ..., split: {metric: value}}."""
    splits = read_splits(config)
    limited = {}
    for split, sentences in splits.items():
        limit = config.train_limit if split == "train" else config.eval_limit
        limited[split] = settings.limited(sentences, limit, config)
        logging.info("tag %s: %d sentences", split, len(limited[split]))
    train = limited.pop("train")
    return ner_job.tag_and_score(config, workdir, train, {s: v for s, v in limited.items() if v})
