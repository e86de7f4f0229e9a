"""Training checkpoints with Orbax: periodic async saves, retention, resume, and params-only
loading for a second pre-training phase or fine-tuning.

A checkpoint step directory holds two items: `state` (the TrainState: step, parameters,
optimizer state) and `meta` (JSON: the step, the data position and the model config). Orbax
writes each step to a temporary directory and renames it when complete, so a process killed
mid-save leaves the previous checkpoint as the latest.
"""

import contextlib
import pathlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from input_pipeline import errors, paths

CHECKPOINT_DIR = "checkpoints"


def _abstract(abstract_state: Any, shardings: Any) -> Any:
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings
    )


class Checkpoints:
    """Wraps an Orbax CheckpointManager for `workdir/checkpoints`."""

    def __init__(self, workdir: str | pathlib.Path, max_to_keep: int, async_save: bool = True):
        self.directory = paths.absolute(workdir) / CHECKPOINT_DIR
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Starts saving `state` at `step` (asynchronously when enabled)."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state: Any, shardings: Any) -> tuple[Any, dict]:
        """The state at `step`, placed with `shardings`, and its metadata."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(abstract_state, shardings)),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored.state, restored.meta

    def meta(self, step: int) -> dict:
        """The metadata of `step` alone (cheap: no arrays are read)."""
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are complete."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def is_training_workdir(path: str | pathlib.Path) -> bool:
    return (paths.path(path) / CHECKPOINT_DIR).is_dir()


def load_params(workdir: str | pathlib.Path, step: int | None = None) -> tuple[Any, dict]:
    """Parameters (as host arrays) and metadata of a training checkpoint, without the optimizer.

    Args:
      workdir: a training workdir (holding `checkpoints/`).
      step: which step; default the latest.

    Raises:
      UserError: no complete checkpoint, or none at `step`.
    """
    directory = paths.absolute(workdir) / CHECKPOINT_DIR
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    with ocp.CheckpointManager(directory, options=options, item_names=("state", "meta")) as mgr:
        steps = sorted(mgr.all_steps())
        if not steps:
            raise errors.UserError(f"{directory}: no complete checkpoint")
        if step is not None and step not in steps:
            saved = ", ".join(map(str, steps))
            raise errors.UserError(f"{directory}: no checkpoint at step {step} (saved: {saved})")
        step = steps[-1] if step is None else step
        meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        item = directory / str(step) / "state"
        with ocp.PyTreeCheckpointer() as reader:
            metadata = reader.metadata(item).item_metadata.tree
            target = {"params": metadata["params"]}
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
            restored = reader.restore(
                item,
                args=ocp.args.PyTreeRestore(
                    item=target, restore_args=restore_args, partial_restore=True
                ),
            )
    return restored["params"], meta


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT while the block runs; previous handlers restored."""
    event = threading.Event()
    previous = {}

    def handler(signum, frame):
        logging.warning("received signal %d: saving a checkpoint and stopping", signum)
        event.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield event
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
