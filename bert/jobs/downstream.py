"""Downstream probes of a pre-training run (`config.downstream`): at chosen steps the encoder
being pre-trained is fine-tuned briefly on a small labelled set and scored, so that the run's
evaluations show, beside the held-out MLM figures, when pre-training starts paying off.

Each probe is the project's own job run in-process on the encoder's current parameters (no
checkpoint is read): `sst2` the GLUE job (dev accuracy), `stsb` the embeddings job, a bi-encoder
trained with CoSENT on STS benchmark train (dev Spearman). Probes run at step 0 (a fresh run:
the random initialisation's scores, the baseline), at every `downstream.every` steps (a multiple
of train.eval_every: with the held-out evaluation), and at the last step. Their scores go to
TensorBoard as eval/downstream/TASK/METRIC and into eval_results.json; each probe's own workdir,
WORKDIR/downstream/step_N/TASK, keeps its eval_results.json (its checkpoints are removed), and
a probe found there already (a resumed run repeating a step) is read back, not run again. Under
a time budget a probe's time is not training time (it runs with the held-out evaluation).
"""

import dataclasses
import json
import pathlib
import shutil
from typing import Any

import jax
import ml_collections

from bert import pretrained
from bert.model import BertConfig
from bert.training import checkpoints
from input_pipeline import tokenizers
from util import paths
from util.errors import UserError

# probe name -> (the job's result split, the metric reported)
TASKS = {"sst2": ("dev", "accuracy"), "stsb": ("sts_dev", "spearman")}


def tasks_of(section: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The probes `section` (config.downstream) asks for; () when off (every 0)."""
    if section.every < 0:
        raise UserError(f"config.downstream.every={section.every} must be 0 (no probes) or more")
    if not section.every:
        return ()
    names = tuple(n.strip() for n in str(section.tasks).split(",") if n.strip())
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise UserError(
            f"config.downstream.tasks={section.tasks!r}: name one or more of {', '.join(TASKS)}"
        )
    return names


def check(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The probes of a pre-training `config`, its values checked before any data is prepared
    (a probe's file missing after hours of training would lose them)."""
    d, names = config.downstream, tasks_of(config.downstream)
    if not names:
        return ()
    if config.train.eval_every <= 0 or d.every % config.train.eval_every:
        raise UserError(
            f"config.downstream.every={d.every} must be a multiple of config.train.eval_every="
            f"{config.train.eval_every} (probes run with the held-out evaluation)"
        )
    for field, value in (("steps", d.steps), ("batch_size", d.batch_size)):
        if value < 1:
            raise UserError(f"config.downstream.{field}={value} must be at least 1")
    wanted = {"sst2": [("sst2_dir", "train.tsv"), ("sst2_dir", "dev.tsv")] if d.sst2_dir else [],
              "stsb": [("stsb_train", ""), ("stsb_dev", "")]}  # fmt: skip
    for name in names:
        for field, inside in wanted[name]:
            if not d[field]:
                raise UserError(f"config.downstream.{field} is empty: the {name} probe needs it")
            path = paths.path(d[field]) / inside if inside else paths.path(d[field])
            if not path.is_file():
                raise UserError(f"config.downstream.{field}: {path} is not a file")
    return names


def _job_config(name: str, d: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The fine-tuning job's config of probe `name` with config.downstream's settings."""
    from configs import embeddings as embeddings_config
    from configs import glue as glue_config

    if name == "sst2":
        config = glue_config.get_config("task=sst2")
        config.data_dir, config.predict_splits = d.sst2_dir, ()
    else:
        config = embeddings_config.get_config()
        config.train_file, config.eval_file = d.stsb_train, d.stsb_dev
        # GLUE STS-B's train.tsv, or the STS benchmark's sts-train.csv
        tsv = str(d.stsb_train).endswith(".tsv")
        config.train_format = "glue_stsb" if tsv else "stsbenchmark"
    config.seed, config.max_seq_length = d.seed, d.max_seq_length
    config.train_limit, config.eval_limit = d.train_limit, d.eval_limit
    t = config.train
    t.steps, t.batch_size, t.learning_rate = d.steps, d.batch_size, d.learning_rate
    t.log_every = t.checkpoint_every = d.steps  # one report and one checkpoint, at the end
    return config


@dataclasses.dataclass(frozen=True)
class Probes:
    """The probes of a pre-training run, called by the run skeleton (bert/training/runner.py
    `Run.probe`) as probes(step, params, last) -> results ({} where `step` has none).

    Attributes:
      names: the probes (TASKS' keys).
      section: config.downstream.
      model_config: the pre-trained encoder's config.
      tokenizer: the run's tokenizer.
      directory: WORKDIR/downstream.
    """

    names: tuple[str, ...]
    section: ml_collections.ConfigDict
    model_config: BertConfig
    tokenizer: tokenizers.Tokenizer
    directory: pathlib.Path

    def __call__(self, step: int, params: Any, last: bool) -> dict[str, Any]:
        if not (last or step % self.section.every == 0):
            return {}
        encoder = pretrained.Pretrained(
            self.model_config, {"bert": jax.device_get(params["bert"])}, self.tokenizer,
            source=f"{self.directory.parent} step {step}", task="pretrain", step=step,
        )  # fmt: skip
        return {"downstream": {name: self._probe(name, step, encoder) for name in self.names}}

    def _probe(self, name: str, step: int, encoder: pretrained.Pretrained) -> dict[str, float]:
        """Runs (or reads back) probe `name` at `step`: {its metric: score}."""
        from bert.jobs import embeddings, glue

        workdir = self.directory / f"step_{step}" / name
        done = workdir / "eval_results.json"
        split, metric = TASKS[name]
        if not done.is_file():
            job = {"sst2": glue.run, "stsb": embeddings.run}[name]
            job(_job_config(name, self.section), str(workdir), encoder=encoder)
            if jax.process_index() == 0:
                shutil.rmtree(workdir / checkpoints.CHECKPOINT_DIR, ignore_errors=True)
        return {metric: float(json.loads(done.read_text())[split][metric])}


def probes(
    config: ml_collections.ConfigDict, model_config: BertConfig, tokenizer, workdir: str
) -> Probes | None:
    """The run's probes (`check`ed), or None when config.downstream asks for none."""
    names = check(config)
    if not names:
        return None
    directory = paths.path(workdir) / "downstream"
    return Probes(names, config.downstream, model_config, tokenizer, directory)
