"""Training checkpoints with Orbax: periodic async saves, retention, resume from the newest
checkpoint that restores, and params-only loading for a second pre-training phase or
fine-tuning.

A checkpoint step directory holds three items: `state` (the TrainState: step, parameters,
optimizer state), `meta` (JSON: the step, the data position and the model config) and
`fingerprint` (JSON: the state's signature and checksums, bert/training/fingerprint.py). Orbax
writes each step to a temporary directory and renames it when complete, so a process killed
mid-save, or a save that fails (a full disk), leaves the previous checkpoint as the latest.

A checkpoint that does not restore (flipped bytes, a missing or truncated file, no commit
marker) is moved to `workdir/checkpoints_damaged/<step>` with a warning, and the run resumes
from the one before; it is never deleted. When none restores, nothing is moved and one error
lists them all (a cause common to all of them, such as too little memory, is not damage).
What Orbax and TensorStore print while such a read fails is left out (bert/training/orbax_reads.py):
the warning or the error is the one line about it.
"""

import contextlib
import json
import logging as std_logging
import os
import pathlib
import re
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from bert.training import fingerprint, orbax_reads
from util import errors, paths

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"  # beside CHECKPOINT_DIR: Orbax never lists it
COMMIT_MARKER = "commit_success.txt"  # written by Orbax into a step before it is renamed final
STEP_METADATA = "_CHECKPOINT_METADATA"  # Orbax's JSON record of a step (its items, its time)
ITEMS = ("state", "meta", "fingerprint")


class StateMismatch(ValueError):
    """The checkpoint holds a state of another structure: the config changed, not the files."""


class Damaged(Exception):
    """The checkpoint's files do not restore; the message says why in one line."""


def reason(error: BaseException) -> str:
    """One line for an exception and its causes: each one's first line, without TensorStore's
    spec dump, with the operating system's reason where TensorStore names an error code."""
    lines: list[str] = []
    current: BaseException | None = error
    while current is not None and len(lines) < 3:
        text = str(current).strip() or type(current).__name__
        line = text.splitlines()[0].split(" See full TensorStore details")[0]
        code = re.search(r"os_error_code='?(\d+)", text)
        if code:  # the operating system's reason first: the rest can be long
            line = f"{os.strerror(int(code.group(1)))}: {line}"
        if line not in lines:
            lines.append(line)
        current = current.__cause__ or current.__context__
    joined = ": ".join(lines)
    return joined if len(joined) <= 500 else joined[:500] + "..."


def _is_write_error(error: BaseException) -> bool:
    """An OSError, or TensorStore's error for one (a ValueError naming the OS error code)."""
    return isinstance(error, OSError) or "os_error_code" in str(error)


def _abstract(abstract_state: Any, shardings: Any) -> Any:
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings
    )


class Checkpoints:
    """Wraps an Orbax CheckpointManager for `workdir/checkpoints`."""

    def __init__(self, workdir: str | pathlib.Path, max_to_keep: int, async_save: bool = True):
        self.directory = paths.absolute(workdir) / CHECKPOINT_DIR
        self.damaged_directory = paths.absolute(workdir) / DAMAGED_DIR
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,  # what a killed or failed save left behind
        )
        orbax_reads.settle_event_loops()  # a failed save is one line too
        with orbax_reads.quiet(noise=LISTING_NOISE):
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
        self._saving: int | None = None  # the step of the save that may still be running

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write error of the save in progress (raised here or by a later call, as async
        saves report theirs) as a UserError naming the step, the reason and what is intact."""
        try:
            yield
        except Exception as e:
            if not _is_write_error(e):
                raise
            self.manager.reload()
            newest = self.manager.latest_step()
            with contextlib.suppress(Exception):  # its threads end (and log) before the message
                self.manager.close()
            # the failed save's orphaned futures would log the same error again at exit, after
            # the one line that says it
            std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
            raise errors.UserError(
                f"{self.directory}: writing the checkpoint of step {self._saving} failed: "
                f"{reason(e)}. The checkpoints before it are intact (newest complete: step "
                f"{newest}); free space or fix the disk, then run again"
            ) from None

    def save(self, step: int, state: Any, meta: dict[str, Any], checksums: Any = None) -> None:
        """Starts saving `state` at `step` (asynchronously when enabled).

        Args:
          checksums: the fingerprint's checksum program for `state` (compiled ahead by the
            runner), or None to compile it here.

        Raises:
          UserError: writing this checkpoint, or the one before, failed (a full disk).
        """
        fingerprinted = fingerprint.make(state, checksums)
        with self._writing():
            self.manager.wait_until_finished()  # an async error belongs to the step before
            self._saving = step
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    meta=ocp.args.JsonSave(meta),
                    fingerprint=ocp.args.JsonSave(fingerprinted),
                ),
                force=True,
            )

    def _read_json(self, step: int) -> tuple[dict, dict | None]:
        """(meta, fingerprint or None for a checkpoint saved before fingerprints)."""
        directory = self.directory / str(step)
        if not (directory / COMMIT_MARKER).exists():
            raise Damaged(f"no {COMMIT_MARKER}: an incomplete save or copy")
        _check_step_metadata(directory)
        items = {"meta": ocp.args.JsonRestore()}
        if (directory / "fingerprint").exists():
            items["fingerprint"] = ocp.args.JsonRestore()
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001 (any failure to read the JSON items is damage)
            raise Damaged(reason(e)) from e
        if not isinstance(restored.meta, dict):
            raise Damaged("meta is not a JSON object")
        return restored.meta, restored.get("fingerprint")

    def _restore_state(self, step: int, abstract_state, shardings, saved: dict | None) -> Any:
        """The state at `step`, read completely and checked against its fingerprint."""
        if saved is not None and saved.get("signature") != fingerprint.signature(abstract_state):
            raise StateMismatch("its arrays (names, shapes or dtypes) differ from the config's")
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(abstract_state, shardings))
        )
        try:
            state = self.manager.restore(step, args=args).state
            jax.block_until_ready(state)  # a lazy read fails here, not later in training
        except Exception as e:  # noqa: BLE001 (sorted below: damage or another structure)
            if saved is None and isinstance(e, (ValueError, KeyError)):
                raise StateMismatch(reason(e)) from e  # no fingerprint: assume a config change
            raise Damaged(reason(e)) from e
        if saved is not None:
            if not isinstance(saved.get("checksums"), dict):
                raise Damaged("its fingerprint has no checksums")
            mismatch = fingerprint.first_mismatch(state, saved)
            if mismatch is not None:
                raise Damaged(f"array {mismatch} differs from its checksum (corrupted bytes)")
        return state

    def restore(self, step: int, abstract_state: Any, shardings: Any) -> tuple[Any, dict]:
        """The state at `step`, placed with `shardings` and checked, and its metadata.

        Raises:
          Damaged: the checkpoint's files do not restore or do not match their checksums.
          StateMismatch: the checkpoint holds another state structure (optimizer or model).
        """
        meta, saved = self._read_json(step)
        return self._restore_state(step, abstract_state, shardings, saved), meta

    def restore_newest(
        self, abstract_state: Any, shardings: Any, check_meta: Callable[[int, dict], None]
    ) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest checkpoint that restores; None when there is none.

        Newer ones that do not restore are moved to `checkpoints_damaged/` with a warning.

        Args:
          check_meta: (step, meta) -> raises (a UserError) when the run may not resume it.

        Raises:
          UserError: checkpoints exist but none restores (each listed with its reason).
          StateMismatch: the newest readable checkpoint holds another state structure.
        """
        failed: list[tuple[int, str]] = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                with orbax_reads.quiet(reported=(Damaged,)):
                    meta, saved = self._read_json(step)
                    check_meta(step, meta)
                    state = self._restore_state(step, abstract_state, shardings, saved)
            except Damaged as e:
                failed.append((step, str(e)))
                continue
            self._move_aside(failed, step)
            return step, state, meta
        if failed:
            listed = "; ".join(f"step {s}: {why}" for s, why in failed)
            raise errors.UserError(
                f"{self.directory}: no checkpoint restores ({listed}). Nothing was moved; move "
                "them away (or use a new workdir) to start afresh"
            )
        return None

    def _move_aside(self, failed: list[tuple[int, str]], good: int) -> None:
        """Moves the damaged steps to checkpoints_damaged/<step> (process 0 moves)."""
        if not failed:
            return
        for step, why in failed:
            target = self.damaged_directory / str(step)
            n = 1
            while target.exists():  # the same step damaged again after an earlier move
                n += 1
                target = self.damaged_directory / f"{step}.{n}"
            logging.warning(
                "checkpoint %s/%d does not restore: %s. Moved to %s; resuming from step %d",
                self.directory, step, why, target, good,
            )  # fmt: skip
            if jax.process_index() == 0:
                self.damaged_directory.mkdir(parents=True, exist_ok=True)
                (self.directory / str(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("damaged checkpoints moved aside")
        with orbax_reads.quiet(noise=LISTING_NOISE):
            self.manager.reload()

    def meta(self, step: int) -> dict:
        """The metadata of `step` alone (cheap: no arrays are read)."""
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are complete.

        Raises:
          UserError: the pending save failed to write (a full disk).
        """
        with self._writing():
            self.manager.wait_until_finished()

    def close(self) -> None:
        with self._writing():
            self.manager.close()


def is_training_workdir(path: str | pathlib.Path) -> bool:
    return (paths.path(path) / CHECKPOINT_DIR).is_dir()


def load_params(workdir: str | pathlib.Path, step: int | None = None) -> tuple[Any, dict]:
    """Parameters (as host arrays) and metadata of a training checkpoint, without the optimizer,
    checked against the checkpoint's fingerprint where it has one.

    Args:
      workdir: a training workdir (holding `checkpoints/`).
      step: which step; default the latest.

    Raises:
      UserError: no complete checkpoint, none at `step`, or a damaged one.
    """
    directory = paths.absolute(workdir) / CHECKPOINT_DIR
    with (
        orbax_reads.quiet(reported=(Exception,), noise=READING_NOISE),  # the options warn too
        ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
            item_names=ITEMS,
        ) as mgr,
    ):  # fmt: skip
        steps = sorted(mgr.all_steps())
        if not steps:
            raise errors.UserError(f"{directory}: no complete checkpoint")
        if step is not None and step not in steps:
            saved = ", ".join(map(str, steps))
            raise errors.UserError(f"{directory}: no checkpoint at step {step} (saved: {saved})")
        step = steps[-1] if step is None else step
        try:
            params, meta, saved = _read_params(mgr, directory / str(step), step)
        except Exception as e:  # noqa: BLE001 (unreadable files are a damaged checkpoint)
            raise errors.UserError(f"{directory}/{step}: damaged checkpoint: {reason(e)}") from e
    # the parameters' key path in the saved state: a TrainState's field, or a plain dict's key
    dataclass_field = saved and any(k.startswith(".params") for k in saved["checksums"])
    prefix = ".params" if dataclass_field else "['params']"
    mismatch = saved and fingerprint.first_mismatch(params, saved, prefix=prefix)
    if mismatch:
        raise errors.UserError(
            f"{directory}/{step}: damaged checkpoint: array {mismatch} differs from its checksum"
        )
    return params, meta


# What Orbax logs when it lists the steps of a workdir and one's STEP_METADATA does not read
# (with the whole file in the message). A restore checks that file itself and reports the step
# as damaged, once.
LISTING_NOISE = ("Failed to json parse Metadata file", "Failed to read Metadata file")
# Orbax's warnings on reading: that a read-only manager is read-only (twice), and that a step
# lacks the metadata file it can do without. Loading a workdir is no damage, nor says so.
READING_NOISE = ("Given directory is read only", "CheckpointManagerOptions.read_only=True",
                 "Metadata file does not exist", *LISTING_NOISE)  # fmt: skip


def _check_step_metadata(step_dir) -> None:
    """Raises Damaged when the step's STEP_METADATA is there but does not read as JSON (Orbax
    reads on without it, after logging the file's content)."""
    path = step_dir / STEP_METADATA
    if not path.exists():  # older checkpoints have none
        return
    try:
        json.loads(path.read_text())
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Damaged(f"{STEP_METADATA}: {reason(e)}") from e


def _read_params(mgr, step_dir, step: int) -> tuple[Any, dict, dict | None]:
    """(parameters as numpy arrays, meta, fingerprint or None) of one step."""
    _check_step_metadata(step_dir)
    items = {"meta": ocp.args.JsonRestore()}
    if (step_dir / "fingerprint").exists():
        items["fingerprint"] = ocp.args.JsonRestore()
    json_items = mgr.restore(step, args=ocp.args.Composite(**items))
    with ocp.PyTreeCheckpointer() as reader:
        metadata = reader.metadata(step_dir / "state")
        if metadata is None or metadata.item_metadata is None:
            raise Damaged("the state's metadata does not read")
        metadata = metadata.item_metadata.tree
        target = {"params": metadata["params"]}
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        restored = reader.restore(
            step_dir / "state",
            args=ocp.args.PyTreeRestore(
                item=target, restore_args=restore_args, partial_restore=True
            ),
        )
    return restored["params"], json_items.meta, json_items.get("fingerprint")


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
