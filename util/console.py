"""What the command-line tools print: a user error as one line (`error: ...`, exit code 2, no
traceback), and third-party start-up noise (TensorFlow's C++ start-up lines, XLA's backend probing,
libraries' INFO logs) kept off the console unless the user asks for it (`--verbose`).

Nothing here runs on import: each tool calls what it needs at its start."""

import argparse
import contextlib
import logging
import os
import pathlib
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from typing import NoReturn

from util.errors import UserError

# The exit status of every user error (the shell's convention for a usage error).
USER_ERROR_STATUS = 2
# The exit status of a run a signal stopped after saving its checkpoint (sysexits.h's
# EX_TEMPFAIL: a temporary failure, to be retried), which a scheduler tells from a finished one.
STOPPED_STATUS = 75

# Environment defaults set before TensorFlow or JAX load, unless the user set them already.
# TF_CPP_MIN_LOG_LEVEL=2: TensorFlow's and XLA's C++ INFO and WARNING lines are dropped (their
# errors still show).
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2"}

# Lines that TensorFlow's C++ start-up writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says (it logs
# before its log level is read); dropped while TensorFlow is imported, every other line is kept.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "cpu_feature_guard.cc",
    "rebuild TensorFlow with the appropriate compiler flags",
)

# Third-party warnings that are start-up noise: JAX's "An NVIDIA GPU (or a Google TPU) may be
# present on this machine, but ... is not installed", which bert/training/accelerators.py replaces
# with the install to run. (JAX's "CUDA backend failed to initialize" still shows.)
HIDDEN_WARNINGS = ("may be present on this machine",)

# A config field as an override names it: dotted identifiers (`train.steps`).
FIELD_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def report(error: BaseException) -> int:
    """Prints a user error as one line on stderr; returns the exit status to end with."""
    message = " ".join(str(error).split("\n")).strip() or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    return USER_ERROR_STATUS


def _chain(error: BaseException | None) -> list[BaseException]:
    """The exception, then its cause or context, and so on."""
    chain: list[BaseException] = []
    while error is not None and all(error is not e for e in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def user_error_in(error: BaseException) -> UserError | None:
    """The innermost UserError in an exception's chain (a library that wraps the exceptions it
    catches, as absl flags and ml_collections do for config files, keeps it as a cause)."""
    found = [e for e in _chain(error) if isinstance(e, UserError)]
    return found[-1] if found else None


def flag_error_message(error: BaseException, argv: list[str], config_flag: str = "config") -> str:
    """One line for an error raised while the flags and the config file were read: a UserError's
    message, a misspelt config field with the flag that named it and ml_collections' suggestion,
    the flag library's own message, or else the innermost error with its type (a config file
    that failed: ml_collections puts a whole traceback in its message)."""
    user = user_error_in(error)
    if user is not None:
        return str(user)
    chain = _chain(error)
    keys = [e.args[0] for e in chain if isinstance(e, KeyError) and e.args
            and isinstance(e.args[0], str)]  # fmt: skip
    if keys:
        key, hints = keys[-1], [k.split("\n", 1)[1] for k in keys if "\n" in k]
        names = [a.split("=", 1)[0] for a in argv if a.startswith(f"--{config_flag}.")]
        flag = next((n for n in names if key in n.split(".")), f"--{config_flag}")
        return f"{flag}: no config field {key!r}" + (f"; {hints[0]}" if hints else "")
    required = re.match(
        r"flag --(\w+)=None: Flag --\1 must have a value other than None", str(error)
    )
    if required:
        return f"--{required.group(1)} is required (see --helpshort)"
    if "Traceback" not in str(error) and type(error).__module__.startswith("absl."):
        return str(error)  # absl's own message names the flag
    overrides = [a.split("=", 1)[0] for a in argv if a.startswith(f"--{config_flag}.")]
    for name in overrides:
        if not FIELD_PATH.fullmatch(name.split(".", 1)[1]):
            return (
                f"{name}: not a config field name (a dotted path, e.g. --{config_flag}.train.steps)"
            )
    inner = chain[-1]
    frames = traceback.extract_tb(inner.__traceback__)
    if overrides and frames and f"{os.sep}ml_collections{os.sep}" in frames[-1].filename:
        # ml_collections failed to apply an override, e.g. a field under a string: name them
        return f"{', '.join(overrides)}: {type(inner).__name__}: {inner}"
    return f"--{config_flag}: {type(inner).__name__}: {inner}"


def import_tensorflow():
    """TensorFlow, imported without its C++ start-up lines (for code that loads it late, e.g.
    to read a Google checkpoint)."""
    if "tensorflow" not in sys.modules:
        with filtered_stderr():
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]


def quiet_environment(environ: dict[str, str]) -> None:
    """Sets QUIET_ENVIRONMENT's defaults in `environ` where the user has not set them."""
    for key, value in QUIET_ENVIRONMENT.items():
        environ.setdefault(key, value)


@contextlib.contextmanager
def filtered_stderr(noise: tuple[str, ...] = STARTUP_NOISE) -> Iterator[None]:
    """Captures what C/C++ code writes to file descriptor 2 inside the block, then writes it back
    without the lines containing one of `noise`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not any(n in line for n in noise)]  # fmt: skip
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def is_shown(record: logging.LogRecord) -> bool:
    """Log filter: warnings and errors (but HIDDEN_WARNINGS); INFO only from this project, not
    libraries' chatter such as XLA's 'Unable to initialize backend'."""
    if record.levelno >= logging.WARNING:
        return record.levelno >= logging.ERROR or not any(
            hidden in record.getMessage() for hidden in HIDDEN_WARNINGS
        )
    path = os.path.abspath(record.pathname)
    return path.startswith(str(PROJECT_ROOT) + os.sep) and "site-packages" not in path


class PlainFormatter(logging.Formatter):
    """A log line as a user reads it, on a terminal or in a log file: the time and the message,
    a warning or an error saying so (`--verbose` keeps absl's prefix: level, date, thread and
    source line)."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"{clock} {level}{record.getMessage()}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a usage error printed as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)
