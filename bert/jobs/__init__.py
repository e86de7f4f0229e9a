"""One module per `config.task`, each with run(config, workdir) -> results. Jobs alone read
config sections (settings.py turns them into the typed values the machinery takes).

JOBS is the registry main.py runs a task through; a job's module is imported only when its task
runs, so that a bad task name fails before TensorFlow and JAX load.
"""

import importlib
from collections.abc import Callable
from typing import Any

from util.errors import UserError

# config.task -> the module of its job
JOBS = {
    "pretrain": "bert.jobs.pretrain",  # configs/bert_base.py
    "glue": "bert.jobs.glue",  # configs/glue.py
    "classify": "bert.jobs.classify",  # configs/classify.py
    "squad": "bert.jobs.squad",  # configs/squad.py
    "ner": "bert.jobs.ner",  # configs/ner.py
    "tag": "bert.jobs.tag",  # configs/tag.py
    "sts": "bert.jobs.sts",  # configs/sts.py
    "embeddings": "bert.jobs.embeddings",  # configs/embeddings.py
}

Job = Callable[[Any, str], dict[str, Any]]


def check(task: str) -> None:
    """Raises UserError unless `task` is a known task; the message lists the known ones."""
    if task not in JOBS:
        raise UserError(f"--config: config.task {task!r} is not one of {', '.join(JOBS)}")


def job(task: str) -> Job:
    """The run(config, workdir) of `task`'s job."""
    check(task)
    return importlib.import_module(JOBS[task]).run
