"""A training workdir of ours as a Hugging Face directory.

The checkpoint (the newest, or a given step) is loaded by bert/pretrained.py with the tokenizer
it records; the task it records picks the HF class:

  pretrain      BertForPreTraining (MLM + NSP heads), or BertForMaskedLM without NSP
  glue/<name>   BertForSequenceClassification, id2label from the recorded label names (or the
                GLUE task table); STS-B as problem_type "regression" with one output
  classify/<p>  BertForSequenceClassification, problem_type single_label_classification,
                multi_label_classification or regression as the job's problem type <p>
  ner           BertForTokenClassification, id2label the tag names
  squad         BertForQuestionAnswering

HF's token-classification and question-answering classes have no pooler, so none is written
for them (ours has one that their outputs never use). A ModernBERT encoder (rotary positions)
is written as transformers' ModernBERT class of the task instead (ModernBertForMaskedLM,
ModernBertForSequenceClassification, ...), its task heads being ModernBERT's
(`model.prediction_head`). An ELECTRA workdir (objective electra) is written as two
directories, `discriminator/` (ElectraForPreTraining) and `generator/` (ElectraForMaskedLM),
each with its config.json and the tokenizer (bert/convert/electra_table.py). The tokenizer is
written by bert/convert/hf_tokenizer.py; the whole directory is written atomically.
"""

import dataclasses
import json
import pathlib
from typing import Any

from bert import layer_stack, pretrained
from bert.convert import electra_table, formats, hf_tokenizer, modernbert_table
from bert.convert.formats import CheckpointError
from bert.convert.name_table import CLASSIFIER, MLM, NSP, QA_OUTPUTS, config_to_hf
from bert.convert.params import groups_of, head_to_hf, params_to_hf
from bert.tasks import glue
from util import errors

# the classify job's problem types as transformers' config.json names them
HF_PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}
# HF classes built on BertModel(add_pooling_layer=False).
NO_POOLER = ("BertForMaskedLM", "BertForTokenClassification", "BertForQuestionAnswering")


@dataclasses.dataclass(frozen=True)
class Exported:
    """What `export_workdir` wrote."""

    task: str
    step: int
    architecture: str
    labels: tuple[str, ...]  # id2label's names, in class order; empty without a classifier
    files: tuple[str, ...]  # every file written, tokenizer files included
    notes: tuple[str, ...] = ()  # what the user should know (e.g. label names not recorded)


def _target(task: str, params: dict[str, Any], workdir: str) -> tuple[str, str | None]:
    """(HF architecture, our head's parameter group or None) for a recorded task."""
    if task == "pretrain":
        return ("BertForPreTraining" if NSP in params else "BertForMaskedLM"), None
    if task.startswith(("glue/", "classify/")):
        return "BertForSequenceClassification", CLASSIFIER
    if task == "ner":
        return "BertForTokenClassification", CLASSIFIER
    if task == "squad":
        return "BertForQuestionAnswering", QA_OUTPUTS
    raise CheckpointError(
        f"{workdir}: trained for task {task!r}, which has no Hugging Face class here "
        "(pretrain, glue/<name>, classify/<problem type>, ner and squad do)"
    )


def _modern_target(loaded: pretrained.Pretrained, workdir: str) -> tuple[str, str | None]:
    """`_target` of a ModernBERT encoder: transformers' ModernBERT class for the task."""
    if loaded.task == "pretrain":
        if NSP in loaded.params:
            raise CheckpointError(
                f"{workdir}: a ModernBERT encoder with a next-sentence head, which transformers' "
                "ModernBertForMaskedLM does not have"
            )
        return ("ModernBertForMaskedLM" if MLM in loaded.params else "ModernBertModel"), None
    architecture, head = _target(loaded.task, loaded.params, workdir)
    architecture = "ModernBert" + architecture.removeprefix("Bert")
    if not loaded.config.prediction_head:
        raise CheckpointError(
            f"{workdir}: a ModernBERT encoder fine-tuned with BERT's tanh-pooler heads "
            f"(model.prediction_head false), which transformers' {architecture} does not have"
        )
    return architecture, head


def _modern_state(loaded: pretrained.Pretrained, architecture: str, head: str | None) -> dict:
    """`_state` of a ModernBERT encoder: the task class's, or ModernBertForMaskedLM's."""
    groups = ("bert", modernbert_table.PREDICTION_HEAD, head) if head else ("bert", MLM)
    if head and modernbert_table.PREDICTION_HEAD not in loaded.params:
        raise CheckpointError(f"{loaded.source}: a {loaded.task} checkpoint without its head")
    params = {g: loaded.params[g] for g in groups if g in loaded.params}
    return modernbert_table.state_dict(params, loaded.config, architecture)


def modern_config(loaded: pretrained.Pretrained, architecture: str) -> dict:
    """A ModernBERT config.json for `architecture`, with our tokenizer's special ids (also the
    sentence-transformers export's, bert/export/st_export.py)."""
    t = loaded.tokenizer
    ids = {"pad_token_id": t.pad_id, "cls_token_id": t.cls_id, "sep_token_id": t.sep_id,
           "bos_token_id": t.cls_id, "eos_token_id": t.sep_id}  # fmt: skip
    return modernbert_table.config_to_hf(loaded.config, architecture, ids)


def _labels(loaded: pretrained.Pretrained, num_labels: int) -> tuple[tuple[str, ...], list[str]]:
    """The class names in order, and a note when they had to be made up."""
    names = loaded.labels
    if not names and loaded.task.startswith("glue/"):
        names = glue.get_task(loaded.task.removeprefix("glue/")).labels
    if names and len(names) != num_labels:
        raise CheckpointError(
            f"{loaded.source}: {len(names)} label names recorded but the classifier has "
            f"{num_labels} outputs"
        )
    if names:
        return tuple(names), []
    made_up = tuple(f"LABEL_{i}" for i in range(num_labels))  # HF's own default names
    if num_labels == 1:
        return made_up, []  # a regression's one output
    return made_up, [f"no label names recorded (an older run): {made_up[0]}..{made_up[-1]}"]


def _head_config(loaded: pretrained.Pretrained, head: str, state: dict) -> tuple[dict, list[str]]:
    """config.json's task fields (id2label, problem_type, ...) and any note."""
    if head != CLASSIFIER:
        return {}, []
    num_labels = state["classifier.bias"].shape[0]
    names, notes = _labels(loaded, num_labels)
    fields: dict[str, Any] = {"finetuning_task": loaded.task.removeprefix("glue/")}
    if loaded.task.startswith("glue/"):
        regression = num_labels == 1
        fields["problem_type"] = "regression" if regression else "single_label_classification"
    if loaded.task.startswith("classify/"):
        fields["finetuning_task"], problem = loaded.task.split("/", 1)
        fields["problem_type"] = HF_PROBLEM_TYPES[problem]
    fields["id2label"] = {str(i): name for i, name in enumerate(names)}
    fields["label2id"] = {name: i for i, name in enumerate(names)}
    return fields, notes


def _state(loaded: pretrained.Pretrained, architecture: str, head: str | None) -> dict:
    """The HF state dict: encoder (and pooler where the class has one), then the heads."""
    params = dict(loaded.params)
    head_params = {head: params.pop(head)} if head else {}
    if head is not None:
        params = {"bert": params["bert"]}  # a fine-tuned head model has no MLM or NSP head
    groups_of(params, loaded.config)  # names and shapes checked against the config
    state = params_to_hf(params, loaded.config)
    if architecture in NO_POOLER:
        state = {k: v for k, v in state.items() if not k.startswith("bert.pooler.")}
    if head is not None:
        state.update(head_to_hf(head_params, head))
    return state


def _export_electra(
    loaded: pretrained.Pretrained, destination: pathlib.Path, overwrite: bool
) -> Exported:
    """An ELECTRA workdir's checkpoint as `destination`/discriminator (ElectraForPreTraining)
    and `destination`/generator (ElectraForMaskedLM), each with config.json and the tokenizer."""
    from safetensors.numpy import save_file

    config, params = loaded.config, loaded.params
    generator = electra_table.generator_config_of(params, config)
    electra_table.check(config, generator, loaded.source)
    parts = {
        "discriminator": (electra_table.DISCRIMINATOR, config,
                          electra_table.discriminator_state(params, config)),
        "generator": (electra_table.GENERATOR, generator,
                      electra_table.generator_state(params, config, generator)),
    }  # fmt: skip
    files: list[str] = []
    with formats.atomic_directory(destination, overwrite) as tmp:
        for folder, (architecture, part, state) in parts.items():
            (tmp / folder).mkdir()
            save_file(state, str(tmp / folder / "model.safetensors"), metadata={"format": "pt"})
            fields = electra_table.hf_config(part, architecture, loaded.tokenizer.pad_id)
            (tmp / folder / "config.json").write_text(json.dumps(fields, indent=2) + "\n")
            written = hf_tokenizer.write_tokenizer(
                loaded.tokenizer, tmp / folder, config.max_position_embeddings
            )
            files += [f"{folder}/{name}" for name in ("config.json", "model.safetensors", *written)]
    architecture = ", ".join(f"{folder}/: {part[0]}" for folder, part in parts.items())
    return Exported(loaded.task, loaded.step, architecture, (), tuple(files))


def export_workdir(
    workdir: str | pathlib.Path,
    destination: str | pathlib.Path,
    step: int | None = None,
    overwrite: bool = False,
) -> Exported:
    """Writes the checkpoint of a training workdir as an HF directory with its tokenizer.

    Args:
      workdir: a workdir of ours (holding `checkpoints/`), pre-trained or fine-tuned.
      destination: the HF directory to write (must not exist or be empty, unless `overwrite`).
      step: the checkpoint step; None: the newest.

    Raises:
      UserError: no checkpoint (at `step`), a task without an HF class, a mismatched head.
    """
    from safetensors.numpy import save_file

    try:
        loaded = pretrained.load(str(workdir), step=step)
    except errors.UserError:
        raise
    except (FileNotFoundError, ValueError) as e:  # the recorded tokenizer is gone or unfit
        raise CheckpointError(f"{workdir}: {e}") from None
    if loaded.task == "pretrain" and electra_table.is_electra(loaded.params):
        return _export_electra(loaded, pathlib.Path(destination), overwrite)
    c = loaded.config
    if c.embedding_width != c.hidden_size:
        raise CheckpointError(
            f"{workdir}: embeddings {c.embedding_width} wide before an encoder {c.hidden_size} "
            "wide (model.embedding_size), which transformers' BERT classes cannot hold"
        )
    params, config = layer_stack.as_unrolled(loaded.params, loaded.config)  # scanned: unstacked
    loaded = dataclasses.replace(loaded, params=params, config=config)
    modern = loaded.config.position_embedding == "rope"  # a ModernBERT encoder
    if modern:
        architecture, head = _modern_target(loaded, str(workdir))
    else:
        architecture, head = _target(loaded.task, loaded.params, str(workdir))
    if head is not None and head not in loaded.params:
        raise CheckpointError(f"{workdir}: a {loaded.task} checkpoint without its {head} head")
    state = (_modern_state if modern else _state)(loaded, architecture, head)
    fields, notes = _head_config(loaded, head, state) if head else ({}, [])
    if modern:
        hf_config = {**modern_config(loaded, architecture), **fields}
    else:
        hf_config = {**config_to_hf(loaded.config, architecture), **fields}
    with formats.atomic_directory(pathlib.Path(destination), overwrite) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        types = {"token_types": False} if modern else {}  # ModernBERT takes no token_type_ids
        written = hf_tokenizer.write_tokenizer(
            loaded.tokenizer, tmp, loaded.config.max_position_embeddings, **types
        )
    labels = tuple(fields.get("id2label", {}).values())
    files = ("config.json", "model.safetensors", *written)
    return Exported(loaded.task, loaded.step, architecture, labels, files, tuple(notes))
