"""Errors that are the user's to fix: they print as one clear message, never a traceback."""

from __future__ import annotations

from lbctl.exitcodes import Exit


class UserError(Exception):
    """A problem the user can fix (bad file, bad option, port in use). ``str()`` is the message."""

    exit_code: int = Exit.USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
