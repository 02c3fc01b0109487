"""Errors a user can cause. The CLI prints them as one line and exits non-zero, never with a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input or environment (bad file, dead server, wrong URL).

    `exit_code` follows the CLI's convention: 2 for invalid input (scenario, arguments), 1 for everything else.
    """

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(UserError):
    """An invalid configuration file: names the file, the key path and what was expected."""

    exit_code = 2
