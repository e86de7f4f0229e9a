"""The one exception type for problems a user causes and can fix: a missing or malformed file, a
wrong config value, a mismatched checkpoint. Its message names the file, line or field. `main.py`
prints it as one line and exits with code 2; anything else is a bug and keeps its traceback."""


class UserError(ValueError):
    """A problem the user can fix; the message alone says what and where."""
