"""Compiling ahead (bert/training/ahead.py): the announced shapes compile once each, in the
background threads and not on first use; the results are the jitted function's own; an
unannounced shape still runs; a compilation's error reaches the call that needs the shape."""

import logging
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert.training import ahead

COMPILE_LOGGER = "jax._src.interpreters.pxla"  # JAX logs "Compiling jit(NAME) ..." at DEBUG


def step(weights, batch):
    if batch["x"].shape[1] == 5:
        raise ValueError("length 5 is refused")
    return jnp.tanh(batch["x"] @ weights).sum(axis=1)


def compilations(caplog) -> list[tuple[int, str]]:
    """(length, thread name) of each compilation of jit(step) logged so far."""
    return [
        (r.args[1][1].shape[1], r.threadName)
        for r in caplog.records
        if r.msg.startswith("Compiling") and r.args[0] == "jit(step)"
    ]


def batch(length: int) -> dict[str, jax.Array]:
    x = np.arange(4 * length * 3, dtype=np.float32).reshape(4, length, 3) / 100
    return {"x": jnp.asarray(x)}


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


@pytest.fixture
def weights():
    return jnp.asarray(np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2))


def test_announced_shapes_compile_once_in_the_background(caplog, weights):
    caplog.set_level(logging.DEBUG, logger=COMPILE_LOGGER)
    jitted = jax.jit(step)
    expected = {n: np.asarray(step(weights, batch(n))) for n in (2, 3, 4)}  # op by op
    caplog.clear()
    compiler = ahead.CompileAhead(threads=1)
    announced = [abstract(batch(n)) for n in (3, 2, 3)]  # a repeat compiles once
    call = compiler.wrap(jitted, abstract(weights), announced)
    for n in (2, 3, 4, 3, 2):
        np.testing.assert_allclose(np.asarray(call(weights, batch(n))), expected[n], rtol=1e-6)
    compiler.close()
    main = threading.main_thread().name
    assert sorted(compilations(caplog)) == [(2, "compile-ahead_0"), (3, "compile-ahead_0"),
                                            (4, main)]  # fmt: skip


def test_no_threads_compiles_on_first_use(caplog, weights):
    caplog.set_level(logging.DEBUG, logger=COMPILE_LOGGER)
    compiler = ahead.CompileAhead(threads=0)
    call = compiler.wrap(jax.jit(step), abstract(weights), [abstract(batch(2))])
    assert compilations(caplog) == []
    call(weights, batch(2))
    compiler.close()
    assert compilations(caplog) == [(2, threading.main_thread().name)]


def test_a_failed_compilation_is_raised_by_the_call_that_needs_it(weights):
    compiler = ahead.CompileAhead(threads=2)
    call = compiler.wrap(jax.jit(step), abstract(weights), [abstract(batch(n)) for n in (5, 2)])
    assert call(weights, batch(2)).shape == (4, 2)
    with pytest.raises(ValueError, match="length 5 is refused"):
        call(weights, batch(5))
    compiler.close()


def test_eval_shape_traces_the_jitted_function(weights):
    """Under a transformation (predict's eval_shape) the call traces, never runs an executable."""
    compiler = ahead.CompileAhead(threads=1)
    call = compiler.wrap(jax.jit(step), abstract(weights), [abstract(batch(2))])
    shapes = jax.eval_shape(call, weights, abstract(batch(2)))
    compiler.close()
    assert (shapes.shape, shapes.dtype) == ((4, 2), jnp.float32)


def test_a_single_shape_program_compiles_once_in_the_background(caplog, weights):
    """`single` (the checkpoint checksums): one fixed shape, compiled ahead, run, traced."""
    caplog.set_level(logging.DEBUG, logger=COMPILE_LOGGER)

    def total(tree):
        return jax.tree.map(jnp.sum, tree)

    names = []
    for threads in (1, 0):
        compiler = ahead.CompileAhead(threads)
        call = compiler.single(jax.jit(total), abstract(batch(3)))
        for _ in range(2):
            np.testing.assert_allclose(call(batch(3))["x"], np.sum(batch(3)["x"]), rtol=1e-6)
        assert jax.eval_shape(call, abstract(batch(3)))["x"].shape == ()
        compiler.close()
        names.append([r.threadName for r in caplog.records
                      if r.msg.startswith("Compiling") and r.args[0] == "jit(total)"])  # fmt: skip
        caplog.clear()
    assert names == [["compile-ahead_0"], [threading.main_thread().name]]
