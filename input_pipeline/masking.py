"""On-the-fly masked-LM masking in TensorFlow ops, with a stateless, per-example random stream.

Every random number is a hash of (seed, the example's key, the token position, a stream tag):
a counter-based generator built from the MurmurHash3 finalizer, in uint32 TF ops. Nothing is
stateful, the result for an example does not depend on the batch it sits in, and the same
(seed, key) always gives the same mask. The pipeline keys each example on (epoch, index in the
epoch), so every epoch sees new masks and a resumed run sees the same ones.

Selection follows the original BERT (`create_masked_lm_predictions`): the candidates are the
tokens that are not special (padding included); `min(max_predictions, max(1, round(n * rate)))`
of them are chosen, n being the number of candidates (Python's `round`: half to even). With
whole-word masking the unit is a word (a word-start token and the continuation tokens after it;
a token right after a non-candidate also starts a word), words are visited in random order and
a word is taken when it fits in the remaining budget, otherwise skipped, as Google's code does.
Each chosen token independently becomes [MASK] (80%), a random non-special token (10%), or
stays unchanged (10%).

Works on one example (`[L]`) or a batch (`[B, L]`), inside `tf.data` maps or eagerly.
"""

from collections.abc import Sequence

import tensorflow as tf

from util.errors import UserError

MASK_TOKEN_SHARE = 0.8  # chosen tokens replaced by [MASK] (BERT)
RANDOM_TOKEN_SHARE = 0.1  # chosen tokens replaced by a random token (BERT); the rest stay
_STREAM_WORD_ORDER, _STREAM_ACTION, _STREAM_RANDOM_TOKEN = 0, 1, 2
_MASK32 = 0xFFFFFFFF


def _fmix32(h: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finalizer: a bijection of uint32 with full avalanche."""
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))
    h = h * tf.constant(0x85EBCA6B, tf.uint32)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(13, tf.uint32)))
    h = h * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))


def _split64(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(low, high) 32-bit halves of an int64 tensor, as uint32."""
    x = tf.cast(x, tf.int64)
    low = tf.cast(tf.bitwise.bitwise_and(x, _MASK32), tf.uint32)
    high = tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(x, 32), _MASK32), tf.uint32)
    return low, high


def example_state(seed: int, example_keys: tf.Tensor) -> tf.Tensor:
    """Hashes the seed and each example's key into one uint32 state.

    Args:
      seed: any Python int (taken modulo 2**64).
      example_keys: int [B, K], e.g. (epoch, index).

    Returns:
      uint32 [B, 1].
    """
    seed %= 1 << 64
    state = _fmix32(tf.constant((seed & _MASK32) ^ 0x9E3779B9, tf.uint32))
    state = _fmix32(state ^ tf.constant(seed >> 32, tf.uint32))
    state = tf.broadcast_to(state, tf.shape(example_keys)[:1])  # [B]
    for k in range(example_keys.shape[-1]):
        low, high = _split64(example_keys[:, k])
        state = _fmix32(state ^ low) + tf.constant(0x6A09E667, tf.uint32)
        state = _fmix32(state ^ high) + tf.constant(0xBB67AE85, tf.uint32)
    return state[:, None]


def random_bits(state: tf.Tensor, counter: tf.Tensor, stream: int) -> tf.Tensor:
    """32 random bits per (example state, counter) for one stream; uint32 [B, N].

    Args:
      state: uint32 [B, 1] from `example_state`.
      counter: int32 [1, N] or [B, N], e.g. token positions.
      stream: a small tag that keeps the uses of one counter independent.
    """
    counter = tf.cast(counter, tf.uint32) * tf.constant(4, tf.uint32) + tf.constant(
        stream, tf.uint32
    )
    mixed = _fmix32(counter * tf.constant(0x9E3779B9, tf.uint32) ^ state)
    return _fmix32(mixed + state * tf.constant(0x27D4EB2F, tf.uint32))


def _uniform(bits: tf.Tensor) -> tf.Tensor:
    """Floats in [0, 1) from uint32 bits (24-bit resolution)."""
    top = tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32))
    return tf.cast(top, tf.float32) * (1.0 / (1 << 24))


def _take_words(word_lengths: tf.Tensor, budget: tf.Tensor, max_rounds: int) -> tf.Tensor:
    """Google's greedy rule: visit words in order, take one if it fits in the remaining budget.

    Args:
      word_lengths: int32 [B, W] in visiting order; 0 for absent words.
      budget: int32 [B] tokens to take at most.
      max_rounds: bound on loop rounds (each round but the last takes at least one word).

    Returns:
      bool [B, W], the taken words.
    """
    width = tf.shape(word_lengths)[1]
    index = tf.range(width)[None, :]  # [1, W]

    def round_(taken, remaining, decided):
        eligible = (index >= decided[:, None]) & (word_lengths > 0)
        eligible &= word_lengths <= remaining[:, None]  # [B, W]
        cumulative = tf.cumsum(tf.where(eligible, word_lengths, 0), axis=1)  # [B, W]
        take = eligible & (cumulative <= remaining[:, None])
        overflow = eligible & (cumulative > remaining[:, None])
        first_overflow = tf.argmax(tf.cast(overflow, tf.int32), axis=1, output_type=tf.int32)
        any_overflow = tf.reduce_any(overflow, axis=1)
        decided = tf.where(any_overflow, first_overflow + 1, width)  # [B]
        remaining -= tf.reduce_sum(tf.where(take, word_lengths, 0), axis=1)
        return taken | take, remaining, decided

    def not_done(taken, remaining, decided):
        return tf.reduce_any((decided < width) & (remaining > 0))

    taken = tf.zeros_like(word_lengths, dtype=tf.bool)
    decided = tf.zeros_like(budget)
    taken, _, _ = tf.while_loop(
        not_done, round_, (taken, budget, decided), maximum_iterations=max_rounds
    )
    return taken


def _replacement_ids(bits: tf.Tensor, vocab_size: int, special_ids: Sequence[int]) -> tf.Tensor:
    """Uniform ids in [0, vocab_size) that are not special; int32, shape of `bits`."""
    specials = sorted({int(s) for s in special_ids if 0 <= int(s) < vocab_size})
    allowed = vocab_size - len(specials)
    ids = tf.cast(bits % tf.constant(allowed, tf.uint32), tf.int32)
    for special in specials:  # ascending: shift past each special id at or below
        ids += tf.cast(ids >= special, tf.int32)
    return ids


def _check_arguments(
    mask_rate: float,
    max_predictions_per_seq: int,
    whole_word_masking: bool,
    word_starts: tf.Tensor | None,
    mask_id: int,
    special_ids: Sequence[int],
) -> None:
    """Raises a ValueError naming the first bad argument of `mask_tokens`."""
    if not 0.0 < mask_rate < 1.0:
        raise UserError(f"mask_rate must be in (0, 1), got {mask_rate}")
    if max_predictions_per_seq < 1:
        raise UserError(f"max_predictions_per_seq must be >= 1, got {max_predictions_per_seq}")
    if whole_word_masking and word_starts is None:
        raise ValueError("whole_word_masking needs word_starts")
    if mask_id not in special_ids:
        raise ValueError(f"special_ids {list(special_ids)} must include mask_id {mask_id}")


def _budget(candidate: tf.Tensor, num_predictions: int, mask_rate: float) -> tf.Tensor:
    """Tokens to choose per example: `min(P, max(1, round(n * rate)))`, 0 without candidates.

    Args:
      candidate: bool [B, L], the tokens that may be chosen.
      num_predictions: the most tokens chosen per example.
      mask_rate: share of the candidates to choose.

    Returns:
      int32 [B].
    """
    num_candidates = tf.reduce_sum(tf.cast(candidate, tf.int32), axis=1)  # [B]
    wanted = tf.cast(tf.round(tf.cast(num_candidates, tf.float64) * mask_rate), tf.int32)
    budget = tf.minimum(num_predictions, tf.maximum(1, wanted))
    return tf.where(num_candidates > 0, budget, 0)  # [B]


def _words(
    candidate: tf.Tensor, word_starts: tf.Tensor | None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Cuts the candidates into words; every candidate is a word of its own without `word_starts`.

    A candidate starts a word if it is flagged in `word_starts`, or if the token before it is no
    candidate.

    Args:
      candidate: bool [B, L], the tokens that may be chosen.
      word_starts: int or bool [B, L], nonzero where a token starts a word; or None.

    Returns:
      word_id: int32 [B, L], each token's word (numbered from 0 in each example); L for the
        non-candidates (a spare bucket).
      word_lengths: int32 [B, W=L], tokens per word id; 0 past the last word.
      num_words: int32 [B].
    """
    length = candidate.shape[-1]
    batch = tf.shape(candidate)[0]
    if word_starts is not None:
        starts = tf.cast(word_starts, tf.bool)
        previous = tf.pad(candidate[:, :-1], [[0, 0], [1, 0]])  # [B, L]
        is_start = candidate & (starts | ~previous)
    else:
        is_start = candidate
    word_id = tf.cumsum(tf.cast(is_start, tf.int32), axis=1) - 1  # [B, L]
    word_id = tf.where(candidate, word_id, length)  # non-candidates go to a spare bucket
    rows = tf.range(batch)[:, None]  # [B, 1]
    word_lengths = tf.math.unsorted_segment_sum(
        tf.ones_like(word_id), rows * (length + 1) + word_id, batch * (length + 1)
    )
    word_lengths = tf.reshape(word_lengths, [batch, length + 1])[:, :length]  # [B, W=L]
    num_words = tf.reduce_sum(tf.cast(is_start, tf.int32), axis=1)  # [B]
    return word_id, word_lengths, num_words


def _choose_words(
    state: tf.Tensor,
    word_id: tf.Tensor,
    word_lengths: tf.Tensor,
    num_words: tf.Tensor,
    budget: tf.Tensor,
    whole_word_masking: bool,
    num_predictions: int,
) -> tf.Tensor:
    """Visits the words in a random order and takes them within the budget.

    Args:
      state: uint32 [B, 1] from `example_state`.
      word_id, word_lengths, num_words: from `_words`.
      budget: int32 [B] from `_budget`.
      whole_word_masking: words may be longer than one token (Google's greedy rule applies).
      num_predictions: the most tokens chosen per example.

    Returns:
      bool [B, L], the chosen tokens.
    """
    positions = tf.range(word_id.shape[-1], dtype=tf.int32)[None, :]  # [1, W=L]
    rows = tf.range(tf.shape(word_id)[0])[:, None]  # [B, 1]
    # Sort by 31 random bits, absent words last.
    order_bits = random_bits(state, positions, _STREAM_WORD_ORDER)  # [B, W]
    order_key = tf.cast(tf.bitwise.right_shift(order_bits, tf.constant(1, tf.uint32)), tf.int32)
    order_key = tf.where(positions < num_words[:, None], order_key, tf.int32.max)
    order = tf.argsort(order_key, axis=1, stable=True)  # [B, W]
    sorted_lengths = tf.gather(word_lengths, order, batch_dims=1)  # [B, W]
    if whole_word_masking:
        taken_sorted = _take_words(sorted_lengths, budget, num_predictions + 1)
    else:  # every word is one token: the first `budget` words
        taken_sorted = (positions < budget[:, None]) & (sorted_lengths > 0)
    taken_words = tf.scatter_nd(
        tf.stack([tf.broadcast_to(rows, tf.shape(order)), order], axis=-1),
        tf.cast(taken_sorted, tf.int32),
        tf.shape(order),
    )  # [B, W], by word id
    taken_words = tf.pad(taken_words, [[0, 0], [0, 1]])  # the spare bucket is never taken
    return tf.gather(taken_words, word_id, batch_dims=1) > 0  # [B, L]


def _corrupt(
    input_ids: tf.Tensor,
    chosen: tf.Tensor,
    state: tf.Tensor,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
) -> tf.Tensor:
    """80% [MASK], 10% random token, 10% unchanged, decided per chosen token; int32 [B, L]."""
    positions = tf.range(input_ids.shape[-1], dtype=tf.int32)[None, :]  # [1, L]
    action = _uniform(random_bits(state, positions, _STREAM_ACTION))  # [B, L]
    random_ids = _replacement_ids(
        random_bits(state, positions, _STREAM_RANDOM_TOKEN), vocab_size, special_ids
    )  # [B, L]
    corrupted = tf.where(action < MASK_TOKEN_SHARE, mask_id, input_ids)
    corrupted = tf.where(
        (action >= MASK_TOKEN_SHARE) & (action < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE),
        random_ids,
        corrupted,
    )
    return tf.where(chosen, corrupted, input_ids)  # [B, L]


def _predictions(
    input_ids: tf.Tensor, chosen: tf.Tensor, num_predictions: int, max_predictions_per_seq: int
) -> dict[str, tf.Tensor]:
    """The chosen positions in ascending order, their original ids and weights, padded to P.

    Returns:
      masked_lm_positions, masked_lm_ids: int32 [B, P]; masked_lm_weights: float32 [B, P].
    """
    length = input_ids.shape[-1]
    positions = tf.range(length, dtype=tf.int32)[None, :]  # [1, L]
    # The largest (L - position) scores first.
    score = tf.where(chosen, length - positions, 0)  # [B, L]
    top_scores, top_positions = tf.math.top_k(score, k=num_predictions, sorted=True)  # [B, k]
    weights = tf.cast(top_scores > 0, tf.float32)
    lm_positions = tf.where(top_scores > 0, top_positions, 0)
    lm_ids = tf.where(top_scores > 0, tf.gather(input_ids, lm_positions, batch_dims=1), 0)
    pad = [[0, 0], [0, max_predictions_per_seq - num_predictions]]
    return {
        "masked_lm_positions": tf.pad(lm_positions, pad),
        "masked_lm_ids": tf.pad(lm_ids, pad),
        "masked_lm_weights": tf.pad(weights, pad),
    }


def mask_tokens(
    input_ids: tf.Tensor,
    example_keys: tf.Tensor,
    *,
    seed: int,
    max_predictions_per_seq: int,
    special_ids: Sequence[int],
    mask_id: int,
    vocab_size: int,
    mask_rate: float = 0.15,
    whole_word_masking: bool = False,
    word_starts: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Chooses and corrupts the tokens to predict (see the module doc).

    Args:
      input_ids: int32 [B, L] or [L].
      example_keys: int [B, K] or [K]: the per-example key of the random stream.
      seed: the run's seed.
      max_predictions_per_seq: P, the most tokens chosen per example; outputs are padded to it.
      special_ids: ids never chosen and never used as random replacements; must hold the
        padding, [CLS], [SEP] and [MASK] ids (the pipeline also passes [UNK]).
      mask_id: the [MASK] id.
      vocab_size: random replacements are drawn from `[0, vocab_size)` minus `special_ids`.
      mask_rate: share of candidate tokens to choose (BERT: 0.15).
      whole_word_masking: choose whole words (needs `word_starts`).
      word_starts: int or bool, shape of `input_ids`: nonzero where a token starts a word.

    Returns:
      input_ids: int32, shape of `input_ids`, the corrupted tokens.
      masked_lm_positions: int32 [B, P] (or [P]), ascending, then 0.
      masked_lm_ids: int32, the original tokens at those positions, then 0.
      masked_lm_weights: float32, 1 for a real prediction, then 0.
    """
    _check_arguments(
        mask_rate, max_predictions_per_seq, whole_word_masking, word_starts, mask_id, special_ids
    )
    input_ids = tf.convert_to_tensor(input_ids, tf.int32)
    single = input_ids.shape.rank == 1
    if single:
        input_ids = input_ids[None]
        example_keys = tf.convert_to_tensor(example_keys)[None]
        word_starts = None if word_starts is None else tf.convert_to_tensor(word_starts)[None]
    length = input_ids.shape[-1]
    if length is None:
        raise ValueError("input_ids needs a static length")
    num_predictions = min(max_predictions_per_seq, length)
    state = example_state(seed, example_keys)  # [B, 1] uint32

    special = tf.constant(sorted({int(s) for s in special_ids}), tf.int32)
    candidate = tf.reduce_all(input_ids[:, :, None] != special, axis=-1)  # [B, L]
    budget = _budget(candidate, num_predictions, mask_rate)  # [B]
    word_id, word_lengths, num_words = _words(
        candidate, word_starts if whole_word_masking else None
    )
    chosen = _choose_words(
        state, word_id, word_lengths, num_words, budget, whole_word_masking, num_predictions
    )  # [B, L]
    out = {"input_ids": _corrupt(input_ids, chosen, state, mask_id, vocab_size, special_ids)}
    out |= _predictions(input_ids, chosen, num_predictions, max_predictions_per_seq)
    if single:
        out = {k: v[0] for k, v in out.items()}
    return out
