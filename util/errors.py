"""The exceptions that end a run without a traceback. `UserError`, for problems a user causes and
can fix (a missing or malformed file, a wrong config value, a mismatched checkpoint), names the
file, line or field: `main.py` prints it as one line and exits with code 2. `Stopped` is a run
that a signal stopped after saving its checkpoint: exit code 75. Anything else is a bug and keeps
its traceback."""


class UserError(ValueError):
    """A problem the user can fix; the message alone says what and where."""


class Stopped(Exception):
    """A run stopped by SIGTERM or SIGINT once its checkpoint was saved; the same command
    resumes it."""

    def __init__(self, step: int, total_steps: int):
        super().__init__(
            f"stopped by a signal at step {step} of {total_steps}, checkpoint saved: run the same "
            "command again to resume"
        )
        self.step, self.total_steps = step, total_steps
