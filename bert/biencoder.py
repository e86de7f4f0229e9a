"""A bi-encoder: one shared sentence encoder applied to every side of a pair or triplet.

The parameters are exactly those of `BertForSentenceEmbedding` (`{"bert": encoder}`), so a
trained bi-encoder's workdir loads anywhere an encoder does (configs/sts.py, init_from,
export).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert.heads import BertForSentenceEmbedding
from bert.model import BertConfig

Array = jax.Array


class BertBiEncoder(nn.Module):
    """Embeds each side of a batch of pairs (or triplets, ...) with one shared encoder.

    Called as model(ids_0, segments_0, mask_0, ids_1, segments_1, mask_1, ...): three inputs
    [batch, length_i] per side (a single `ids` is one side with no padding, as at
    initialisation). Sides of one length are stacked into one encoder pass; sides of different
    lengths (a short query beside a long passage, each padded to its own length bucket) get a
    pass each. Each row's embedding depends on its own tokens only.

    With `packed` (config.train.pack): model(*group_0, *group_1, ...), six inputs per group of
    sides packed into shared rows (bert/finetuning/batches.py PackedSides): ids, segments, mask,
    position_ids, sequence_ids [rows, length] and starts [batch, sides in the group], which
    places text s of the group's row b as sequence b * sides + s (heads.pool_packed). The
    groups hold consecutive sides in order (all sides, or each alone); each group takes one
    encoder pass, and each embedding is the one its text has alone in a row.

    Returns: [batch, sides, embed] float32.
    """

    config: BertConfig
    pooling: str = "mean"
    normalize: bool = True
    packed: bool = False

    def setup(self):
        self.embed = BertForSentenceEmbedding(self.config, self.pooling, self.normalize)
        nn.share_scope(self, self.embed)  # parameters at {"bert": ...}, as the embedding model's

    def __call__(self, *inputs: Array, deterministic: bool = True) -> Array:
        if self.packed:
            return self._packed(inputs, deterministic)
        if len(inputs) == 1:
            inputs = (inputs[0], jnp.zeros_like(inputs[0]), jnp.ones_like(inputs[0]))
        if len(inputs) % 3:
            raise ValueError(f"{len(inputs)} inputs: expected ids, segments, mask per side")
        sides = len(inputs) // 3
        batch, length = inputs[0].shape
        if any(x.shape[1] != length for x in inputs):  # one pass per side
            each = [self.embed(*inputs[i : i + 3], deterministic) for i in range(0, len(inputs), 3)]
            return jnp.stack(each, axis=1)  # [batch, sides, embed]
        # [batch, sides, length] -> [batch * sides, length]: a device's rows stay on it.
        ids, segments, mask = (
            jnp.stack(inputs[k::3], axis=1).reshape(batch * sides, length) for k in range(3)
        )
        pooled = self.embed(ids, segments, mask, deterministic)  # [batch * sides, embed]
        return pooled.reshape(batch, sides, -1)

    def _packed(self, inputs: tuple[Array, ...], deterministic: bool) -> Array:
        if len(inputs) % 6:
            raise ValueError(
                f"{len(inputs)} inputs: expected ids, segments, mask, position_ids, "
                "sequence_ids, starts per packed group"
            )
        each = []
        for i in range(0, len(inputs), 6):
            ids, segments, mask, positions, sequence_ids, starts = inputs[i : i + 6]
            batch, sides = starts.shape
            pooled = self.embed(ids, segments, mask, deterministic, positions, sequence_ids,
                                starts.reshape(-1))  # fmt: skip
            each.append(pooled.reshape(batch, sides, -1))
        return jnp.concatenate(each, axis=1)  # [batch, sides, embed]
