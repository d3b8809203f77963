"""The one exception a consultant may see: a message that says what is wrong and how to fix it."""


class CskitError(Exception):
    """Bad params or data. ``cskit run`` prints the message and exits with ``exit_code`` (2; no traceback)."""

    exit_code = 2
