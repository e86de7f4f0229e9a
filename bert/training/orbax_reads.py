"""Reading checkpoints with Orbax, with what it prints when a read fails kept off the console:
the caller reports a damaged checkpoint in one line, and nothing else is said about it.

Orbax runs a restore's reads as asyncio tasks in an event loop of its own, and closes that loop
as soon as one read fails, leaving the other reads pending. Each of those then reports from
TensorStore's threads that its loop is closed (a `RuntimeError: Event loop is closed` traceback
through `sys.unraisablehook`), and the abandoned tasks and coroutines report their errors when
they are collected (`Task exception was never retrieved` through the `asyncio` logger,
`Exception ignored in: <coroutine ...>`, `coroutine ... was never awaited`): hundreds of lines,
before and after the one that says what is damaged, at moments that depend on thread timing.
`quiet` removes the cause: event loops made from then on in the process cancel their pending
tasks before closing, as `asyncio.run` does, so that no read outlives its loop and no error
goes unretrieved (cancelling a task cancels the TensorStore read it awaits). Orbax also logs
some failures itself (a step's `_CHECKPOINT_METADATA` that is not JSON, with the whole file in
the message): `quiet` holds its log records back while the block runs, and drops them when the
block raises an error that the caller reports.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator

import orbax.checkpoint as ocp

# Where Orbax's own log records come from (it logs through absl's logger).
ORBAX_DIR = os.path.dirname(os.path.abspath(ocp.__file__)) + os.sep
ABSL_LOGGER = "absl"


class _SettlingLoop(asyncio.SelectorEventLoop):
    """An event loop that cancels its pending tasks, and waits for them to end, before it
    closes."""

    def close(self) -> None:
        try:
            if not self.is_running() and not self.is_closed():
                self.run_until_complete(_end_other_tasks())
        finally:
            super().close()


async def _end_other_tasks() -> None:
    """Cancels the loop's other tasks (and any they start) and waits for them; their errors
    count as retrieved: the read that failed first is the one its caller reports."""
    this = asyncio.current_task()
    while pending := asyncio.all_tasks() - {this}:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending)
        for task in pending:
            if not task.cancelled():
                task.exception()


class _SettlingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _SettlingLoop()


def settle_event_loops() -> None:
    """Makes every event loop made from now on in this process settle its tasks before it
    closes (`_SettlingLoop`): Orbax's background saves make their own loops, and a save that
    fails (a full disk) left its pending writes to report on closed loops, hundreds of lines
    around the run's one error line."""
    if not isinstance(asyncio.get_event_loop_policy(), _SettlingPolicy):
        asyncio.set_event_loop_policy(_SettlingPolicy())


class _Held(logging.Filter):
    """Keeps Orbax's log records (other records pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if os.path.abspath(record.pathname).startswith(ORBAX_DIR):
            self.records.append(record)
            return False
        return True


@contextlib.contextmanager
def quiet(
    reported: tuple[type[BaseException], ...] = (), noise: tuple[str, ...] = ()
) -> Iterator[None]:
    """The block's Orbax reads with their noise left out (module docstring).

    Args:
      reported: errors that the caller reports when the block raises them: Orbax's log records
        of the block are then dropped. Otherwise they are let through when the block ends.
      noise: Orbax's messages (their beginnings) that are never let through.
    """
    held = _Held()
    logger = logging.getLogger(ABSL_LOGGER)
    settle_event_loops()
    logger.addFilter(held)
    failed = False
    try:
        yield
    except reported:
        failed = True
        raise
    finally:
        logger.removeFilter(held)
        if not failed:
            for record in held.records:
                if not record.getMessage().startswith(noise):
                    logger.handle(record)
