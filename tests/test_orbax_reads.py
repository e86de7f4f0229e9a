"""Orbax reads without their noise (bert/training/orbax_reads.py): a loop closed while a
TensorStore read is pending reports nothing, and Orbax's log records of a failed read are
dropped while those of a read that succeeds are let through."""

import asyncio
import gc
import logging
import os
import sys

import pytest
import tensorstore as ts

from bert.training import orbax_reads


class Failed(Exception):
    pass


def test_a_loop_closed_with_a_read_pending_reports_nothing(monkeypatch, caplog):
    """As Orbax does when one read of a restore fails: run until the first error, then close
    the loop with the other reads still pending, which complete later."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    promise, future = ts.Promise.new()

    async def first_read_fails():
        asyncio.get_running_loop().create_task(_await(future))  # another read, pending
        await asyncio.sleep(0.01)
        raise Failed("array 0 does not read")

    policy = asyncio.get_event_loop_policy()
    with pytest.raises(Failed), orbax_reads.quiet(reported=(Failed,)):
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(first_read_fails())
        finally:
            loop.close()
    promise.set_result(1)  # the pending read completes after its loop has closed
    gc.collect()  # the abandoned task and coroutine, if any, are collected
    assert unraisable == [], [u.exc_value for u in unraisable]
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
    assert asyncio.get_event_loop_policy() is policy


async def _await(future):
    return await future


def orbax_record(message: str) -> logging.LogRecord:
    path = os.path.join(orbax_reads.ORBAX_DIR, "metadata.py")
    return logging.LogRecord("absl", logging.ERROR, path, 1, message, None, None)


def test_orbax_records_of_a_failed_read_are_dropped_and_of_a_good_one_let_through(caplog):
    logger = logging.getLogger(orbax_reads.ABSL_LOGGER)
    caplog.set_level(logging.INFO)
    with pytest.raises(Failed), orbax_reads.quiet(reported=(Failed,)):
        logger.handle(orbax_record("Failed to read step 6"))
        raise Failed
    with orbax_reads.quiet(reported=(Failed,), noise=("Given directory is read only",)):
        logger.handle(orbax_record("Given directory is read only"))
        logger.handle(orbax_record("Failed to read step 4"))
        logger.info("ours: shown at once")
        assert caplog.messages == ["ours: shown at once"]
    assert caplog.messages == ["ours: shown at once", "Failed to read step 4"]
