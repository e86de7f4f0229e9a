"""Compiling ahead: the shapes a run will need are compiled in background threads while the
steps before them run.

A fine-tuning run pads each batch to a length bucket, so it compiles one train step per bucket
and one prediction step per evaluation bucket. Compiled on first use, each stops the run for
seconds (minutes for a large model on an accelerator). The job knows every step's batch in
advance, so `CompileAhead.wrap` starts those compilations at once, in the order the shapes are
first needed; a call waits only for its own shape's compilation if that has not finished yet.
A call runs the executable compiled for its shape (`jax.stages.Compiled`: lowering and
compiling ahead of time does not fill the jitted function's own cache), so it compiles nothing
more (tests/test_buckets.py counts the compilations).
"""

import concurrent.futures
from collections.abc import Callable, Iterable
from typing import Any

import jax

Batch = dict[str, Any]


def signature(batch: Batch) -> tuple:
    """What tells two batches' compilations apart: each key's shape and dtype."""
    return tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(batch.items()))


class CompileAhead:
    """Background compilation of jitted (fixed, batch) -> ... steps for known batch shapes.

    Args:
      threads: compilations that run at once; 0 compiles nothing ahead (each shape on first use).
    """

    def __init__(self, threads: int) -> None:
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="compile-ahead")
            if threads > 0
            else None
        )

    def wrap(
        self, jitted: Any, fixed: Any, batches: Iterable[Batch], extra: tuple = ()
    ) -> Callable:
        """`jitted` (called as jitted(fixed, batch, *extra)), with every shape of `batches`
        compiled ahead.

        Args:
          fixed: the abstract first argument (ShapeDtypeStructs with their shardings: the train
            state or the parameters), the same at every call.
          batches: abstract global batches (ShapeDtypeStructs with shardings), in the order
            their shapes are first needed; repeats are compiled once.
          extra: the abstract arguments after the batch (a time budget's progress scalar), the
            same shapes at every call.

        Returns a callable with `jitted`'s signature. An error of a background compilation is
        raised by the first call that needs that shape, as compiling on first use would.
        """
        futures: dict[tuple, concurrent.futures.Future] = {}
        if self._pool is not None:
            for batch in batches:
                key = signature(batch)
                if key not in futures:
                    futures[key] = self._pool.submit(_compile, jitted, fixed, batch, *extra)

        def call(first: Any, batch: Batch, *rest: Any) -> Any:
            future = futures.get(signature(batch))
            # not announced (compiled on first use), or under eval_shape
            if future is None or _traced(batch):
                return jitted(first, batch, *rest)
            return future.result()(first, batch, *rest)

        return call

    def single(self, jitted: Any, fixed: Any) -> Callable:
        """`jitted` (called as jitted(x) with x laid out as the abstract `fixed`, such as the
        checkpoint checksums of the train state), compiled ahead."""
        future = self._pool.submit(_compile, jitted, fixed) if self._pool is not None else None

        def call(x: Any) -> Any:
            if future is None or _traced(x):
                return jitted(x)
            return future.result()(x)

        return call

    def close(self) -> None:
        """Drops the compilations not started; one under way finishes in its thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _traced(tree: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def _compile(jitted: Any, *abstract: Any) -> jax.stages.Compiled:
    return jitted.lower(*abstract).compile()
