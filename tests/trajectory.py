"""Trajectory parity: our train step against an independent trainer on the same batches.

The independent side is Hugging Face PyTorch (`BertForPreTraining`,
`BertForSequenceClassification`) with `torch.optim.AdamW` or timm's `Lamb` (NVIDIA FusedLAMB's
rule: bias-corrected Adam moments, decay added to the update, trust ratio only for the decayed
parameters with `always_adapt=False`, global-norm clipping inside the optimizer), and
transformers' own warm-up + polynomial-decay schedule. Both sides start from the same weights
(ours exported to an HF directory by bert/convert), see the same batches, run without dropout in
float32, and report the loss of each step before its update.

Used by tests/test_trajectory.py (tiny model) and bench/trajectory_parity.py (mini, longer).
"""

import dataclasses
import importlib
import importlib.util
import pathlib
import sys
import types
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
import torch
import transformers

from bert import convert
from bert.finetuning.objective import Finetuning
from bert.heads import BertForPreTraining, BertForSequenceClassification, BertForTokenClassification
from bert.losses import classification_sums
from bert.model import BertConfig
from bert.objectives import MlmNsp
from bert.tasks.features import ENCODER_INPUTS
from bert.training import optim, sharding, step


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The optimizer settings both sides share."""

    optimizer: str  # "lamb" or "adamw"
    learning_rate: float
    warmup_steps: int
    total_steps: int
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    clip_norm: float = 1.0


def timm_lamb() -> type:
    """timm's Lamb class, loaded from the installed timm package's optim folder alone.

    timm's own __init__ imports its model zoo, which needs torchvision; torchvision's PyPI wheel
    does not load beside the CPU build of torch used here, so timm is installed without it and
    only its optimizer modules (which import torch alone) are loaded, under a private name.
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "timm is not installed (pip install --no-deps -r requirements-nodeps.txt)"
        )
    if "_timm_optim" not in sys.modules:
        package = types.ModuleType("_timm_optim")
        package.__path__ = [str(pathlib.Path(spec.submodule_search_locations[0]) / "optim")]
        sys.modules["_timm_optim"] = package
    return importlib.import_module("_timm_optim.lamb").Lamb


def no_dropout(config: BertConfig) -> BertConfig:
    return dataclasses.replace(config, hidden_dropout=0.0, attention_dropout=0.0)


def initial_params(config: BertConfig, seed: int = 0) -> dict:
    """Our random initialisation of BertForPreTraining, as host arrays."""
    ids = np.ones((1, 8), np.int32)
    boxed = BertForPreTraining(config).init(jax.random.key(seed), ids)["params"]
    return jax.device_get(nn.meta.unbox(boxed))


def export(params: dict, config: BertConfig, directory: pathlib.Path) -> pathlib.Path:
    """Our encoder with MLM and NSP heads as an HF directory."""
    groups = {k: params[k] for k in ("bert", "mlm", "nsp")}
    convert.export_hf(groups, config, directory, overwrite=True)
    return directory


def _one_device_mesh():
    return sharding.make_mesh((1, 1, 1), jax.devices()[:1])


def _our_run(model, objective, params, recipe: Recipe, batches: Sequence[dict]):
    """(each step's loss before its update, the final parameters as host arrays)."""
    mesh = _one_device_mesh()
    schedule = optim.learning_rate_schedule(
        recipe.learning_rate, recipe.warmup_steps, recipe.total_steps
    )
    tx = optim.make_optimizer(recipe.optimizer, schedule, recipe.weight_decay, recipe.b1,
                              recipe.b2, recipe.eps, recipe.clip_norm)  # fmt: skip
    seq_length = batches[0]["input_ids"].shape[1]
    state = step.create_train_state(model, tx, mesh, 0, seq_length, params)
    _, shardings = step.state_shardings(model, tx, mesh, seq_length)
    train_step = step.compile_train_step(objective, tx, schedule, mesh, shardings)
    losses = []
    for batch in batches:
        state, metrics = train_step(state, sharding.global_batch(batch, mesh))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params)


def ours_pretraining(params, config: BertConfig, recipe: Recipe, batches) -> list[float]:
    """Our losses, step by step, for BertForPreTraining (MLM + NSP) on the pipeline's batches."""
    objective = MlmNsp(config)
    return _our_run(objective.model, objective, params, recipe, batches)[0]


def ours_classification(params, config: BertConfig, recipe: Recipe, batches) -> list[float]:
    """Our losses for BertForSequenceClassification (`params`: bert, pooler and classifier)."""
    model = BertForSequenceClassification(config, params["classifier"]["kernel"].shape[1])
    objective = Finetuning(model, _label_loss, ENCODER_INPUTS, ("label",))
    return _our_run(model, objective, params, recipe, batches)[0]


def ours_tagging(params, config: BertConfig, recipe: Recipe, batches) -> tuple[list[float], dict]:
    """Our losses for BertForTokenClassification (label -1: ignored), and the final parameters."""
    model = BertForTokenClassification(config, params["classifier"]["kernel"].shape[1])
    objective = Finetuning(model, _label_loss, ENCODER_INPUTS, ("label",))
    return _our_run(model, objective, params, recipe, batches)


def _label_loss(logits, batch):
    return classification_sums(logits, batch["label"])


def _is_matrix(name: str) -> bool:
    """BERT's rule on HF names: weight matrices and embeddings are decayed and adapted."""
    return name.split(".")[-1] == "weight" and "LayerNorm" not in name


def torch_optimizer(model: torch.nn.Module, recipe: Recipe):
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if _is_matrix(n)], "weight_decay": recipe.weight_decay},
        {"params": [p for n, p in named if not _is_matrix(n)], "weight_decay": 0.0},
    ]
    betas = (recipe.b1, recipe.b2)
    if recipe.optimizer == "lamb":
        opt = timm_lamb()(groups, lr=recipe.learning_rate, betas=betas, eps=recipe.eps,
                          max_grad_norm=recipe.clip_norm, always_adapt=False,
                          bias_correction=True, foreach=False)  # fmt: skip
    else:
        opt = torch.optim.AdamW(groups, lr=recipe.learning_rate, betas=betas, eps=recipe.eps)
    schedule = transformers.get_polynomial_decay_schedule_with_warmup(
        opt, recipe.warmup_steps, recipe.total_steps, lr_end=0.0, power=1.0
    )
    return opt, schedule


def _hf_run(model: torch.nn.Module, recipe: Recipe, batches, forward) -> list[float]:
    torch.manual_seed(0)
    opt, schedule = torch_optimizer(model, recipe)
    model.train()
    losses = []
    for batch in batches:
        loss = forward(model, batch)
        loss.backward()
        if recipe.optimizer == "adamw" and recipe.clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)
        opt.step()
        schedule.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    return losses


def encoder_inputs(batch: dict) -> dict:
    return {
        "input_ids": torch.tensor(batch["input_ids"], dtype=torch.long),
        "token_type_ids": torch.tensor(batch["segment_ids"], dtype=torch.long),
        "attention_mask": torch.tensor(batch["input_mask"], dtype=torch.long),
    }


def mlm_labels(batch: dict) -> np.ndarray:
    """HF's MLM labels [batch, length]: the original id at each real masked position, else -100."""
    labels = np.full(batch["input_ids"].shape, -100, np.int64)
    rows, columns = np.nonzero(batch["masked_lm_weights"] > 0)
    labels[rows, batch["masked_lm_positions"][rows, columns]] = batch["masked_lm_ids"][
        rows, columns
    ]
    return labels


def hf_pretraining(directory: pathlib.Path, recipe: Recipe, batches) -> list[float]:
    """HF BertForPreTraining's losses (MLM + NSP) from the exported directory."""
    model = transformers.BertForPreTraining.from_pretrained(
        str(directory), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )  # fmt: skip

    def forward(m, batch, masked_only=True):
        """BertForPreTraining's loss. The heads act position by position, so applied to the
        masked positions alone (masked_only) they give the same loss as the model's forward,
        without the decoder's 30,522-way logits at every other position (7 times the time)."""
        nsp = torch.tensor(batch["next_sentence_labels"], dtype=torch.long)
        labels = torch.as_tensor(mlm_labels(batch))
        if not masked_only:
            return m(**encoder_inputs(batch), labels=labels, next_sentence_label=nsp).loss
        sequence, pooled = m.bert(**encoder_inputs(batch))[:2]
        masked = labels != -100
        scores, relationship = m.cls(sequence[masked], pooled)
        cross_entropy = torch.nn.functional.cross_entropy
        return cross_entropy(scores, labels[masked]) + cross_entropy(relationship, nsp)

    with torch.no_grad():  # the shortcut is the model's own loss
        whole, shortcut = forward(model, batches[0], False), forward(model, batches[0])
    torch.testing.assert_close(shortcut, whole, rtol=1e-6, atol=0)
    return _hf_run(model, recipe, batches, forward)


def hf_head(head: type, directory: pathlib.Path, classifier: dict, dropout: float = 0.0):
    """An HF head model (e.g. transformers.BertForTokenClassification) from `directory`, its
    classifier set to ours, with `dropout` as both dropout rates."""
    model = head.from_pretrained(
        str(directory), num_labels=classifier["kernel"].shape[1], hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, attn_implementation="eager",
    )  # fmt: skip
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(np.array(classifier["kernel"]).T))
        model.classifier.bias.copy_(torch.tensor(np.array(classifier["bias"])))
    return model


def _hf_label_loss(m, batch):
    labels = torch.tensor(np.where(batch["label"] < 0, -100, batch["label"]), dtype=torch.long)
    return m(**encoder_inputs(batch), labels=labels).loss


def hf_classification(directory: pathlib.Path, classifier: dict, recipe: Recipe, batches):
    """HF BertForSequenceClassification's losses, its classifier set to ours."""
    model = hf_head(transformers.BertForSequenceClassification, directory, classifier)
    return _hf_run(model, recipe, batches, _hf_label_loss)


def hf_tagging(model: torch.nn.Module, recipe: Recipe, batches) -> list[float]:
    """The losses of an HF BertForTokenClassification (`hf_head`), trained in place."""
    return _hf_run(model, recipe, batches, _hf_label_loss)


def classifier_params(config: BertConfig, pretrained: dict, num_labels: int, seed: int = 1):
    """BertForSequenceClassification parameters: the pretrained encoder, a random classifier."""
    model = BertForSequenceClassification(config, num_labels)
    ids = np.ones((1, 8), np.int32)
    params = jax.device_get(nn.meta.unbox(model.init(jax.random.key(seed), ids)["params"]))
    return {"bert": pretrained["bert"], "classifier": params["classifier"]}


def relative_differences(ours: Sequence[float], theirs: Sequence[float]) -> np.ndarray:
    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-12)


def pipeline_batches(
    shared_data: pathlib.Path,
    directory: pathlib.Path,
    steps: int,
    batch_size: int,
    seq_length: int,
    predictions: int,
) -> list[dict]:
    """`steps` NSP batches from our tf.data pipeline (masks included) over two Wikipedia files
    with the uncased WordPiece vocabulary."""  # fmt: skip
    from input_pipeline import batches, prepare, pretraining, tokenizers

    wiki = shared_data / "wikipedia" / "AA"
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    manifest = prepare.prepare([str(wiki / "wiki_00"), str(wiki / "wiki_01")], directory,
                               "wikiextractor", vocab, num_shards=2, workers=1)  # fmt: skip
    tok = tokenizers.load_tokenizer(manifest.tokenizer_path)
    dataset = pretraining.make_pretraining_dataset(
        [str(p) for p in manifest.shard_paths], batches.Settings(seq_length, predictions),
        tok.special_ids, batch_size=batch_size, seed=0,
    )  # fmt: skip
    return list(dataset.take(steps).as_numpy_iterator())


def sst2_batches(shared_data: pathlib.Path, steps: int, batch_size: int, seq_length: int):
    """The first steps x batch_size SST-2 training sentences as classification batches."""
    from bert.tasks import glue
    from input_pipeline import tokenizers

    tok = tokenizers.load_tokenizer(shared_data / "vocab" / "bert-base-uncased-vocab.txt")
    examples = glue.read_split("sst2", shared_data / "glue" / "SST-2", "train")
    features = glue.convert_examples_to_features(examples[: steps * batch_size], "sst2", tok,
                                                 seq_length)  # fmt: skip
    return [{k: v[i * batch_size : (i + 1) * batch_size] for k, v in features.items()}
            for i in range(steps)]  # fmt: skip


def conll_batches(shared_data: pathlib.Path, steps: int, batch_size: int, seq_length: int):
    """The first steps x batch_size CoNLL-2003 training sentences as tagging batches, each cut
    to its length bucket of 8 as the fine-tuning job does; and the tag list."""
    from bert.finetuning import buckets
    from bert.tasks import ner
    from input_pipeline import tokenizers

    tok = tokenizers.load_tokenizer(shared_data / "vocab" / "bert-base-uncased-vocab.txt")
    sentences = ner.read_conll(shared_data / "conll2003" / "train.txt")[: steps * batch_size]
    labels = ner.label_list(sentences)
    arrays = ner.convert_sentences_to_features(sentences, labels, tok, seq_length)
    batches = []
    for i in range(steps):
        rows = {k: arrays[k][i * batch_size : (i + 1) * batch_size]
                for k in (*ENCODER_INPUTS, "label")}  # fmt: skip
        used = int(rows["input_mask"].sum(axis=1).max())
        length = buckets.bucket_length(used, 8, seq_length)
        batches.append({k: v[:, :length] for k, v in rows.items()})
    return batches, labels
