"""Model sizes and config parsing."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from bert.convert import params as convert_params
from bert.heads import BertForTokenClassification
from bert.model import BertConfig
from configs import bert_base, common

# Published parameter counts of Google's English BERT (BertModel, uncased vocabulary).
PUBLISHED = {"base": 110e6, "large": 340e6}


@pytest.mark.parametrize("size", sorted(common.SIZES))
def test_size_table_matches_hf_parameter_count(size):
    model = bert_base.get_config(f"size={size},vocab_size=30522").model
    layers, width = common.SIZES[size]
    assert (model.num_layers, model.hidden_size) == (layers, width)
    assert model.num_heads == width // 64 and model.intermediate_size == 4 * width
    ours = sum(
        math.prod(s)
        for s in convert_params.expected_shapes(BertConfig.from_dict(model.to_dict())).values()
    )
    hf_config = transformers.BertConfig(
        vocab_size=model.vocab_size,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=model.num_heads,
        intermediate_size=model.intermediate_size,
    )
    with torch.device("meta"):
        theirs = sum(p.numel() for p in transformers.BertForPreTraining(hf_config).parameters())
    assert ours == theirs
    if size in PUBLISHED:
        assert abs(ours - PUBLISHED[size]) / PUBLISHED[size] < 0.02


def test_config_arg_parsing():
    config = bert_base.get_config("size=mini, vocab_size=8000")
    assert config.model.hidden_size == 256 and config.model.vocab_size == 8000
    with pytest.raises(
        ValueError, match="unknown config arg 'siz'; known: mode, phase, recipe, size, vocab_size"
    ):
        bert_base.get_config("siz=mini")
    with pytest.raises(ValueError, match="vocab_size='many' is not a valid int"):
        bert_base.get_config("vocab_size=many")
    with pytest.raises(ValueError, match="'mini' is not of the form key=value"):
        bert_base.get_config("mini")
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        bert_base.get_config("size=huge")


def test_bad_model_values_name_the_field():
    with pytest.raises(ValueError, match=r"hidden_size \(100\) is not a multiple of .*num_heads"):
        BertConfig(vocab_size=10, hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match="model.hidden_act 'tanhh'"):
        BertConfig(vocab_size=10, hidden_act="tanhh")
    with pytest.raises(ValueError, match="model.attention_impl 'flash'"):
        BertConfig(vocab_size=10, attention_impl="flash")
    with pytest.raises(ValueError, match="model.initializer 'uniform' is not one of"):
        BertConfig(vocab_size=10, initializer="uniform")
    for bad in (1e6, 0.0, -0.02):  # 1e6 trained on at a loss of about 1e7, never stopping
        with pytest.raises(
            ValueError, match=rf"model.initializer_range must be in \(0, 1\], got {bad}"
        ):
            BertConfig(vocab_size=10, initializer_range=bad)
    with pytest.raises(ValueError, match="unknown model config fields: hiden_size"):
        BertConfig.from_dict({"vocab_size": 10, "hiden_size": 8})


def test_phase_two_uses_long_sequences():
    one, two = bert_base.get_config("phase=1"), bert_base.get_config("phase=2")
    assert (one.max_seq_length, one.data.max_predictions_per_seq) == (128, 20)
    assert (two.max_seq_length, two.data.max_predictions_per_seq) == (512, 80)
    with pytest.raises(ValueError, match="phase=3 must be 1 or 2"):
        bert_base.get_config("phase=3")


@pytest.mark.parametrize("size", sorted(common.SIZES))
def test_each_size_has_a_consistent_short_recipe(size):
    """recipe=short sets the size's run (SHORT_RUNS), checked as the job checks it before any
    data is prepared; the paper recipe is left as it was."""
    from bert.jobs import pretrain

    config = bert_base.get_config(f"size={size},recipe=short")
    pieces, batch, steps, learning_rate, seq_length = bert_base.SHORT_RUNS[size]
    t, d = config.train, config.data
    assert (d.sentencepiece_vocab_size, t.batch_size, t.steps) == (pieces, batch, steps)
    assert (t.learning_rate, config.max_seq_length) == (learning_rate, seq_length)
    assert config.model.max_position_embeddings >= config.max_seq_length
    assert pretrain.warmup_steps(t) == round(0.05 * steps) and d.sentencepiece_model_type == "bpe"
    assert 0 < t.log_every <= t.eval_every <= t.checkpoint_every <= steps
    assert d.max_predictions_per_seq == round(seq_length * d.mask_rate)
    paper = bert_base.get_config(f"size={size}")
    assert (paper.train.steps, pretrain.warmup_steps(paper.train)) == (900_000, 10_000)
    with pytest.raises(ValueError, match="recipe=short has one phase"):
        bert_base.get_config(f"size={size},recipe=short,phase=2")


def test_recipe_and_warmup_proportion_are_checked():
    from bert.jobs import pretrain

    with pytest.raises(ValueError, match="recipe='quick' must be paper or short"):
        bert_base.get_config("recipe=quick")
    train = bert_base.get_config("recipe=short").train
    train.warmup_proportion = 0.25
    assert pretrain.warmup_steps(train) == train.steps // 4
    train.warmup_proportion = 1.5
    with pytest.raises(ValueError, match=r"train.warmup_proportion \(1.5\) must be in \[0, 1\)"):
        pretrain.warmup_steps(train)


def test_auto_dtype_is_float32_on_cpu():
    config = BertConfig.from_dict({"vocab_size": 10, "dtype": "auto"})
    assert config.dtype == "float32"  # this suite runs on CPU; GPU/TPU get bfloat16
    with pytest.raises(ValueError, match="model.dtype 'auto'"):
        BertConfig(vocab_size=10, dtype="auto")  # only from_dict resolves it


def _classifier_draws(initializer: str) -> np.ndarray:
    """A new 384 x 64 tagger head's initial weights under `initializer`, as float64."""
    config = BertConfig(vocab_size=32, hidden_size=384, num_layers=1, num_heads=6,
                        intermediate_size=64, initializer=initializer)  # fmt: skip
    model = BertForTokenClassification(config, num_labels=64)
    params = model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"]
    return np.asarray(nn.meta.unbox(params)["classifier"]["kernel"], np.float64)


def _beyond_two_std(weights: np.ndarray) -> float:
    """The share of `weights` beyond two standard deviations of initializer_range 0.02."""
    return float(np.mean(np.abs(weights) > 0.04))


@pytest.mark.full
def test_head_initializer_draws_as_its_reference():
    """A fine-tuning head starts from HF transformers' normal draws (std initializer_range, no
    cut); pre-training's default stays Google's BERT's, cut at two standard deviations."""
    torch.manual_seed(0)
    hf_config = transformers.BertConfig(vocab_size=32, hidden_size=384, num_hidden_layers=1,
                                        num_attention_heads=6, intermediate_size=64,
                                        num_labels=64)  # fmt: skip
    hf = transformers.BertForTokenClassification(hf_config).classifier.weight
    hf = hf.detach().double().numpy()
    normal, cut = _classifier_draws("normal"), _classifier_draws("truncated_normal")
    # 24,576 draws each: the std within 2% of HF's, the share beyond 2 std (4.6%) within 0.6%
    assert normal.std() == pytest.approx(hf.std(), rel=0.02)
    assert abs(_beyond_two_std(normal) - _beyond_two_std(hf)) < 0.006 and _beyond_two_std(hf) > 0.04
    assert _beyond_two_std(cut) == 0 and cut.std() == pytest.approx(0.88 * hf.std(), rel=0.02)
    assert common.finetune_model().initializer == "normal"
    assert bert_base.get_config().model.initializer == "truncated_normal"
