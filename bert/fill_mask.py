"""fill-mask, as users know it from Hugging Face's pipeline: the most likely tokens, with their
probabilities, for each [MASK] in a sentence, from any checkpoint with an MLM head (ours, HF,
Google TF).

CLI:
  python -m bert.fill_mask CHECKPOINT "Paris is the [MASK] of France." [MORE ...] [--top_k=5]
"""

import dataclasses
import functools
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert import pretrained
from bert.heads import BertForPreTraining
from bert.model import BertConfig
from util import console, paths
from util.errors import UserError

MASK = "[MASK]"


@dataclasses.dataclass(frozen=True)
class Filler:
    """One candidate for one [MASK]: its token id, its text and its probability."""

    token_id: int
    token: str
    score: float


def encode(model: pretrained.Pretrained, sentence: str, max_seq_length: int) -> list[int]:
    """[CLS] sentence [SEP] with each literal "[MASK]" as the mask token."""
    if MASK not in sentence:
        raise UserError(f"no {MASK} in {sentence!r}")
    tok = model.tokenizer
    ids = tok.encode_masked(sentence)
    if len(ids) + 2 > max_seq_length:
        raise UserError(f"{sentence!r} has {len(ids) + 2} tokens, more than {max_seq_length}")
    return tok.build_inputs(ids)[0]


@functools.partial(jax.jit, static_argnames=("config",))
def _probabilities(params, ids, positions, *, config: BertConfig):
    """Softmax over the vocabulary at `positions` [1, masks] of one unpadded sentence `ids`."""
    out = BertForPreTraining(config, with_nsp=False, with_pooler=False).apply(
        {"params": params}, ids, jnp.zeros_like(ids), jnp.ones_like(ids),
        masked_positions=positions,
    )  # fmt: skip
    return jax.nn.softmax(out["mlm_logits"], axis=-1)  # [1, masks, vocab]


def _text(tok, token_id: int) -> str:
    """A filler as transformers' pipeline shows it: the token decoded (`the`, not SentencePiece's
    `▁the`; a WordPiece `##ing` stays itself), a special token by its name."""
    if token_id in tok.special_ids.all:
        return tok.id_to_token(token_id)
    return tok.decode([token_id])


def fill_mask(
    model: pretrained.Pretrained, sentences: Sequence[str], top_k: int = 5
) -> list[list[list[Filler]]]:
    """The `top_k` fillers of every [MASK] of every sentence, most likely first.

    Returns: [sentence][mask][rank] -> Filler. Each mask is predicted independently, with the
    other masks left as [MASK] (as HF's pipeline does).
    """
    if "mlm" not in model.params:
        raise UserError(f"{model.source} has no MLM head: fill-mask needs one")
    tok = model.tokenizer
    out = []
    for sentence in sentences:
        ids = np.asarray(encode(model, sentence, model.config.max_position_embeddings), np.int32)
        positions = np.nonzero(ids == tok.mask_id)[0].astype(np.int32)
        probs = _probabilities(model.params, ids[None], positions[None], config=model.config)
        probs = np.asarray(probs[0], np.float64)  # [masks, vocab]
        sentence_fillers = []
        for row in probs:
            best = [int(i) for i in np.argsort(-row, kind="stable")[:top_k]]
            sentence_fillers.append([Filler(i, _text(tok, i), float(row[i])) for i in best])
        out.append(sentence_fillers)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = console.ArgumentParser(
        prog="python -m bert.fill_mask", description="Top fillers of each [MASK]."
    )
    parser.add_argument(
        "checkpoint", help="a workdir of ours, an HF or Google TF checkpoint, a Hub model id"
    )
    parser.add_argument("sentences", nargs="+", help=f"text with one or more {MASK}")
    parser.add_argument("--top_k", type=int, default=5, help="fillers shown per mask")
    parser.add_argument("--tokenizer", default="", help="tokenizer; default: beside the checkpoint")
    args = parser.parse_args(argv)
    paths.use_fsspec_backend()  # gs:// and hf:// through fsspec, also inside Orbax
    try:
        model = pretrained.load(
            args.checkpoint, args.tokenizer, fields=("checkpoint", "--tokenizer")
        )
        results = fill_mask(model, args.sentences, args.top_k)
    except UserError as e:
        return console.report(e)
    for sentence, masks in zip(args.sentences, results, strict=True):
        print(sentence)
        for number, fillers in enumerate(masks, 1):
            shown = "  ".join(f"{f.token} {f.score:.4f}" for f in fillers)
            print(f"  mask {number}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
