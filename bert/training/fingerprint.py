"""A checkpoint's fingerprint, saved beside the state in the same atomic commit: the state's
signature (each array's path, shape and dtype) and a checksum of each array's bits.

The signature tells a checkpoint written for another optimizer or model (a config change: the
user's to fix) from a damaged one. The checksums make a restore check real: Orbax reads arrays
through TensorStore, whose zstd chunks carry no checksum, so flipped bytes can decode to other
numbers without any error. Checksums are two wrapping uint32 sums per array (of its 32-bit
words, and of the words weighted by their position, as in Fletcher's checksum), computed on the
devices where the arrays live: integer sums do not depend on the reduction order or the
sharding, so a restore onto another mesh gives the same values.
"""

import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec


def signature(state: Any) -> str:
    """sha256 of every leaf's key path, shape and dtype (arrays or ShapeDtypeStructs)."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    items = [(jax.tree_util.keystr(path), list(x.shape), str(x.dtype)) for path, x in leaves]
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def _words(x: jax.Array) -> jax.Array:
    """The array's bits as uint32 words (narrower items widened, 64-bit ones split in two)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    narrow = {1: jnp.uint8, 2: jnp.uint16}.get(x.dtype.itemsize)
    if narrow is not None:
        return jax.lax.bitcast_convert_type(x, narrow).astype(jnp.uint32)
    return jax.lax.bitcast_convert_type(x, jnp.uint32)  # [...] or [..., 2] for 64-bit items


def _checksum(x: jax.Array) -> jax.Array:
    """[2] uint32: the sum of the words and the sum of word * (row-major position + 1)."""
    words = _words(x)
    position = jnp.zeros(words.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(words.ndim)):  # positions without reshaping a sharded array
        iota = jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis)
        position = position + iota * jnp.uint32(stride % 2**32)
        stride *= words.shape[axis]
    return jnp.stack(
        [jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * (position + 1), dtype=jnp.uint32)]
    )


def _checksum_tree(tree: Any) -> Any:
    return jax.tree.map(_checksum, tree)


def checksum_program(state: Any) -> Any:
    """The jitted program behind `checksums` for states laid out as `state` (arrays, or
    ShapeDtypeStructs with shardings to compile it ahead); its results are replicated, so every
    process reads the (tiny) results, also in a multi-host job."""
    leaves = jax.tree.leaves(state)
    first = getattr(leaves[0], "sharding", None) if leaves else None
    replicated = None
    if isinstance(first, NamedSharding):
        replicated = NamedSharding(first.mesh, PartitionSpec())
    return jax.jit(_checksum_tree, out_shardings=replicated)


def checksums(state: Any, program: Any = None) -> dict[str, list[int]]:
    """Key path -> [sum, weighted sum] of every array of `state` (blocks until computed).

    Args:
      program: `checksum_program(state)`, or a callable running it (compiled ahead); None
        makes one.
    """
    program = checksum_program(state) if program is None else program
    sums = jax.device_get(program(state))
    flat = jax.tree_util.tree_flatten_with_path(sums)[0]
    return {jax.tree_util.keystr(path): [int(v) for v in value] for path, value in flat}


def make(state: Any, program: Any = None) -> dict[str, Any]:
    """The fingerprint saved with `state`: {"signature": ..., "checksums": {...}}."""
    return {"signature": signature(state), "checksums": checksums(state, program)}


def first_mismatch(state: Any, saved: dict[str, Any], prefix: str = "") -> str | None:
    """The key path of the first array of `state` whose checksum differs from `saved`'s (or
    that `saved` lacks), or None when all agree.

    Args:
      prefix: the key path of `state` inside the saved state (".params" for the parameters).
    """
    want = saved["checksums"]
    for path, value in checksums(state).items():
        if want.get(prefix + path) != value:
            return prefix + path
    return None
