"""usage: python main.py --config=configs/FILE.py[:ARGS] --workdir=DIR [--config.FIELD=VALUE ...]

Runs the job its config names: pre-training (configs/bert_base.py), GLUE (glue.py:task=sst2),
classification of your own files (classify.py), NER (ner.py), tagging your own files (tag.py),
SQuAD (squad.py), STS evaluation and encoding (sts.py) or sentence-embedding training
(embeddings.py). Every default is a field of the config file, with a comment; any field can be
set with --config.FIELD=VALUE. The workdir holds the checkpoints, TensorBoard events and
results; running the same command again resumes from its newest checkpoint.

Exit codes: 0 finished; 2 a user error (one line naming the file, field or flag); 75 stopped by
SIGTERM or Ctrl-C with its checkpoint saved (run the same command again to resume).
"""

import contextlib
import errno
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bert import jobs
from util import console, paths, tf_runtime, workdir_lock
from util.errors import Stopped, UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/bert_base.py:size=mini.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-host job (automatic on TPU VMs and SLURM)."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, where not automatic."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in the job.")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Show third-party start-up logs (TensorFlow, XLA, libraries' INFO lines)."
)
flags.mark_flags_as_required(["config", "workdir"])

# Write errors of the disk, not of the program: one line, exit code 2 (files stay intact).
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag, config file or config field as one line, code 2."""
    try:
        rest = flags.FLAGS(argv)
        task = _CONFIG.value.task
    except SystemExit:  # absl printed the usage for --help and exits with 1; asking is no error
        if {"--help", "-h", "-?", "--helpshort", "--helpfull"} & set(argv[1:]):
            sys.exit(0)
        raise
    except OSError as e:  # ml_collections defers a config file it could not open until here
        path = flags.FLAGS["config"].config_filename.split(":")[0]
        reason = "no such file" if not os.path.isfile(path) else " ".join(str(e).split())
        sys.exit(console.report(UserError(f"--config={path}: {reason}")))
    except Exception as e:  # noqa: BLE001 (the flags and the config file are the user's)
        if console.user_error_in(e) is None and "--verbose" in argv:
            raise  # a config file that fails for another reason: its traceback, when asked
        sys.exit(console.report(UserError(console.flag_error_message(e, argv))))
    try:
        jobs.check(task)
    except UserError as e:
        sys.exit(console.report(e))
    return rest


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        sys.exit(console.report(UserError(f"unexpected arguments: {' '.join(argv[1:])}")))
    quiet = not _VERBOSE.value
    if quiet:
        console.quiet_environment(os.environ)  # before TensorFlow and JAX load: they read it then
        logging.get_absl_handler().addFilter(console.is_shown)
        logging.get_absl_handler().setFormatter(console.PlainFormatter())
    paths.use_fsspec_backend()  # gs:// and hf:// through fsspec, also inside Orbax
    import jax

    from bert.training import accelerators

    if _DISTRIBUTED.value or _COORDINATOR.value:
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    logging.info("process %d of %d, %d devices", jax.process_index(), jax.process_count(),
                 jax.device_count())  # fmt: skip
    hint = accelerators.startup_warning(jax.default_backend(), jax.__version__)
    if hint:
        logging.warning("%s", hint)
    config = _CONFIG.value
    try:
        # one workdir, one job; taken first, so that a second job stops before loading anything
        with workdir_lock.hold(_WORKDIR.value, jax.process_index()):
            with (
                console.filtered_stderr() if quiet else contextlib.nullcontext(),
                tf_runtime.without_keras_preload(),
            ):
                job = jobs.job(config.task)  # TensorFlow loads only with a job reading with it
            if "tensorflow" in sys.modules:
                tf_runtime.load()  # before its first op: tf.data must not take the accelerator
            job(config, _WORKDIR.value)
    except Stopped as e:
        logging.warning("%s", e)
        sys.exit(console.STOPPED_STATUS)
    except (UserError, PermissionError) as e:  # PermissionError: a workdir or file not ours
        sys.exit(console.report(e))
    except OSError as e:  # a full disk or a failing one while writing a results file
        if e.errno not in WRITE_ERRORS:
            raise
        sys.exit(console.report(UserError(f"writing failed: {e}")))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
