"""Pre-training objectives, one module each, chosen by `config.objective`.

An objective declares its name, the pipeline's batches it trains on (`data_mode`), the heads it
trains and its batch keys; it builds its model (the encoder with those heads), and gives the
loss with its metrics (the shape bert/training/step.py's Objective takes), the denominators of a
global batch, its training FLOPs per sequence and its held-out metrics. Randomness beyond
dropout comes from the step's "objective" key (bert/training/step.py `step_rngs`).

  mlm.py      masked LM alone, on whole sentences packed into rows
  mlm_nsp.py  BERT's masked LM + next sentence prediction, on sentence pairs
  electra.py  ELECTRA: a small generator's masked LM and the encoder's replaced-token detection

An objective with settings of its own reads them from the config section of its name
(`config.electra`), handed to `create` as `options` and checked here (OPTIONS).

A new objective is one module here and its entry in OBJECTIVES (README: Where to add).
"""

from collections.abc import Mapping, Set
from typing import Any, Protocol

import flax.linen as nn
import jax

from bert.model import BertConfig
from bert.objectives import electra
from bert.objectives.mlm import Mlm
from bert.objectives.mlm_nsp import MlmNsp
from util.errors import UserError

Array = jax.Array

# config.objective -> its class
OBJECTIVES = {objective.name: objective for objective in (MlmNsp, Mlm, electra.Electra)}
# config.objective -> the type of its settings (the config section of its name), where it has any
OPTIONS = {electra.Electra.name: electra.Options}


class Objective(Protocol):
    """What a pre-training objective gives the pre-training job (mlm.py documents each part)."""

    name: str
    data_mode: str
    heads: tuple[str, ...]
    batch_keys: tuple[str, ...]
    documents: bool

    @property
    def model(self) -> nn.Module: ...

    def loss_fn(self, params: Any, batch: dict, rngs: dict | None, totals: Any) -> tuple: ...

    def totals_fn(self, batch: dict) -> Any: ...

    def train_flops(self, seq_length: int, num_predictions: int) -> float: ...

    def eval_metrics(self, results: dict[str, float]) -> dict[str, float]: ...


def check(name: str, documents: bool = False, options: Mapping[str, Any] | None = None) -> Any:
    """Raises UserError unless `name` is a known objective (the message lists the known ones)
    that, with `documents`, trains on packed rows, and whose `options` (the config section of
    its name, as a dict; None: the config has none) are valid. Returns them checked (an OPTIONS
    type), or None for an objective without settings."""
    if name not in OBJECTIVES:
        raise UserError(f"config.objective={name!r} is not one of {', '.join(OBJECTIVES)}")
    data_mode = OBJECTIVES[name].data_mode
    if documents and data_mode != "packed":
        raise UserError(
            f"config.data.pack_attention='document' applies to packed rows; objective {name} "
            f"trains on {data_mode} batches (set config.objective=mlm or pack_attention=row)"
        )
    if name not in OPTIONS:
        return None
    if options is None:
        raise UserError(f"objective {name} needs its config.{name} section (configs/{name}.py)")
    return OPTIONS[name].from_dict(options, f"config.{name}")


def create(
    name: str,
    config: BertConfig,
    present: Set[str] | None = None,
    documents: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Objective:
    """The objective `name` for an encoder of `config`.

    Args:
      present: a checkpoint's parameter groups when it is evaluated: a head it lacks is not
        scored. None: training (every head).
      documents: packed rows keep their documents apart (config.data.pack_attention
        "document"): an objective on packed rows only.
      options: the objective's settings, the config section of its name as a dict (OPTIONS);
        ignored by an objective without settings.

    Raises:
      UserError: an unknown name, listing the known ones; documents for an objective whose
        rows are not packed; options missing, unknown or out of range, naming the field.
    """
    checked = check(name, documents, options)
    if checked is None:
        return OBJECTIVES[name].create(config, present, documents)
    return OBJECTIVES[name].create(config, present, documents, checked)
